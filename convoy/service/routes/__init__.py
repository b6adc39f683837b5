"""HTTP and WebSocket routes of the cloud service (thin: validate, call, answer)."""
