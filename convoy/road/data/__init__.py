"""Data shipped with the road layer: the built-in Ordos network (``ordos.geojson``), its notes
(``ORDOS_NOTES.md``) and the script that makes both (``make_ordos.py``)."""
