"""A road network on a map (PNG), and the figures that summarise it.

``plot_network`` draws roads coloured by class with widths by lane count, sites with a marker
per kind, town names, roadside units, lon/lat axes and a scale bar. It uses matplotlib's Agg
canvas directly, so it needs no display and leaves pyplot's global state alone.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convoy.road.network import Edge, RoadClass, RoadNetwork, SiteKind, haversine_m

# Road style: colour, base line width [pt] for one lane, and drawing order.
_ROAD_STYLE: dict[RoadClass, tuple[str, float, int]] = {
    RoadClass.MOTORWAY: ("#c0392b", 1.5, 6),
    RoadClass.TRUNK: ("#e67e22", 1.4, 5),
    RoadClass.PRIMARY: ("#b7950b", 1.1, 4),
    RoadClass.SECONDARY: ("#7f8c8d", 1.0, 3),
    RoadClass.TERTIARY: ("#95a5a6", 0.9, 2),
    RoadClass.SERVICE: ("#a6acaf", 0.8, 1),
}

# Site style: marker, face colour, size [pt^2], legend label.
_SITE_STYLE: dict[SiteKind, tuple[str, str, float, str]] = {
    SiteKind.TOWN: ("o", "#ffffff", 70, "town"),
    SiteKind.COAL_MINE: ("^", "#2c2c2c", 55, "coal mine"),
    SiteKind.POWER_PLANT: ("s", "#8e44ad", 50, "power plant"),
    SiteKind.CHEMICAL_PARK: ("h", "#16a085", 70, "chemical / industrial park"),
    SiteKind.RAIL_LOADING: ("D", "#2471a3", 45, "rail loading"),
    SiteKind.CHARGING_STATION: ("P", "#27ae60", 75, "charging station"),
    SiteKind.SWAP_STATION: ("X", "#58d68d", 70, "battery-swap station"),
    SiteKind.PLATOON_HUB: ("*", "#f39c12", 190, "platoon hub"),
}
_RSU_COLOUR = "#1f77b4"


@dataclass(frozen=True, slots=True)
class NetworkSummary:
    """What a network holds, for the ``convoy map`` table.

    Attributes:
        name: the network's name.
        sites_by_kind: site count per ``SiteKind`` value (kinds with none left out).
        road_km: length of road [km], a two-way road counted once.
        km_by_class: ``road_km`` split by road class value [km].
        edges: directed edge count.
        nodes: node count.
        rsus: roadside unit count.
        elevation_min_m, elevation_max_m: range over nodes and edge profiles [m].
        max_grade: steepest profile segment (absolute rise/run).
    """

    name: str
    sites_by_kind: dict[str, int]
    road_km: float
    km_by_class: dict[str, float]
    edges: int
    nodes: int
    rsus: int
    elevation_min_m: float
    elevation_max_m: float
    max_grade: float


def _undirected(net: RoadNetwork) -> list[Edge]:
    """One edge per road link: a reverse twin with the same end nodes is left out."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in net.edges.values():
        if (e.to_node, e.from_node) in seen:
            continue
        seen.add((e.from_node, e.to_node))
        out.append(e)
    return out


def network_summary(net: RoadNetwork) -> NetworkSummary:
    """Counts, lengths and the elevation range of ``net``."""
    links = _undirected(net)
    counts = Counter(s.kind for s in net.sites.values())
    km_by_class = {
        c.value: sum(e.length_m for e in links if e.road_class is c) / 1000.0
        for c in RoadClass
        if any(e.road_class is c for e in links)
    }
    zs = [n.elevation_m for n in net.nodes.values()]
    zs += [z for e in net.edges.values() for z in e.elevation_m]
    grades = [abs(float(g)) for e in net.edges.values() for g in e.grades()]
    return NetworkSummary(
        name=net.name,
        sites_by_kind={k.value: counts[k] for k in SiteKind if counts[k]},
        road_km=sum(e.length_m for e in links) / 1000.0,
        km_by_class=km_by_class,
        edges=len(net.edges),
        nodes=len(net.nodes),
        rsus=len(net.rsus),
        elevation_min_m=min(zs) if zs else math.nan,
        elevation_max_m=max(zs) if zs else math.nan,
        max_grade=max(grades) if grades else 0.0,
    )


def _geometry(net: RoadNetwork, e: Edge) -> list[tuple[float, float]]:
    if e.geometry:
        return list(e.geometry)
    a, b = net.nodes[e.from_node], net.nodes[e.to_node]
    return [(a.lon, a.lat), (b.lon, b.lat)]


def _nice_km(span_km: float) -> float:
    """A round scale-bar length about a fifth of ``span_km``."""
    target = span_km / 5
    base = 10 ** math.floor(math.log10(target))
    return max(m * base for m in (1, 2, 5) if m * base <= target)


def _short_label(name_en: str) -> str:
    return name_en.split(" (")[0] if len(name_en) > 22 else name_en


def _label_side(lon: float, lat: float, others: list[tuple[float, float]]) -> tuple[int, int]:
    """The quadrant (dx, dy in {-1, 1}) around a point with the fewest other markers.

    A label about 1° wide and 0.12° high goes there; ties keep the first of NE, SE, NW, SW.
    """
    best = (1, 1)
    fewest = math.inf
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        n = sum(0 < dx * (x - lon) < 1.0 and 0 <= dy * (y - lat) < 0.12 for x, y in others)
        if n < fewest:
            best, fewest = (dx, dy), n
    return best


def plot_network(net: RoadNetwork, path: str | Path, title: str | None = None) -> Path:
    """Draw ``net`` to a PNG at ``path``.

    Args:
        net: the network.
        path: the PNG to write.
        title: the figure title (default: the network's name and its counts).

    Returns:
        The path written.
    """
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    s = network_summary(net)
    fig = Figure(figsize=(12, 9), dpi=130)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#f7f5ef")
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]

    # roads: casing for the major classes, then the coloured line, widths by lanes
    links = _undirected(net)
    for e in sorted(links, key=lambda e: _ROAD_STYLE[e.road_class][2]):
        colour, width, z = _ROAD_STYLE[e.road_class]
        lw = width * (1 + 0.6 * (e.lanes - 1))
        xs, ys = zip(*_geometry(net, e), strict=True)
        if e.road_class in (RoadClass.MOTORWAY, RoadClass.TRUNK):
            ax.plot(xs, ys, color="white", lw=lw + 2.2, zorder=z, solid_capstyle="round")
        style = (0, (3, 1.5)) if e.road_class is RoadClass.SERVICE else "solid"
        ax.plot(xs, ys, color=colour, lw=lw, ls=style, zorder=z + 0.5, solid_capstyle="round")

    # road names on the longest link of each named motorway / trunk road
    named: dict[str, Edge] = {}
    for e in links:
        major = e.road_class in (RoadClass.MOTORWAY, RoadClass.TRUNK) and e.name
        if major and (e.name not in named or e.length_m > named[e.name].length_m):
            named[e.name] = e
    for name, e in named.items():
        lon, lat = _geometry(net, e)[len(_geometry(net, e)) // 2]
        ax.text(
            lon, lat, name, fontsize=8, fontweight="bold", color="white", ha="center",
            va="center", zorder=30,
            bbox={"boxstyle": "round,pad=0.25", "fc": _ROAD_STYLE[e.road_class][0], "ec": "none"},
        )  # fmt: skip

    # roadside units
    if net.rsus:
        ax.scatter(
            [r.lon for r in net.rsus.values()],
            [r.lat for r in net.rsus.values()],
            s=9,
            c=_RSU_COLOUR,
            zorder=12,
            linewidths=0,
        )

    # sites, towns on top with their names
    for kind in sorted(SiteKind, key=lambda k: k is SiteKind.TOWN):
        sites = [x for x in net.sites.values() if x.kind is kind]
        if not sites:
            continue
        marker, face, size, _ = _SITE_STYLE[kind]
        ax.scatter(
            [x.lon for x in sites],
            [x.lat for x in sites],
            marker=marker,
            s=size,
            c=face,
            edgecolors="#1b1b1b",
            linewidths=0.8,
            zorder=20 + (kind is SiteKind.TOWN),
        )
        if kind is SiteKind.TOWN:
            for x in sites:
                others = [(o.lon, o.lat) for o in net.sites.values() if o.node != x.node]
                dx, dy = _label_side(x.lon, x.lat, others)
                ax.annotate(
                    _short_label(x.name_en), (x.lon, x.lat), xytext=(6 * dx, 5 if dy > 0 else -13),
                    textcoords="offset points", fontsize=9.5, fontweight="bold",
                    ha="left" if dx > 0 else "right", color="#1b1b1b", zorder=25,
                    path_effects=halo,
                )  # fmt: skip

    # frame: equal-distance aspect at the mean latitude, a little margin
    lons = [n.lon for n in net.nodes.values()]
    lats = [n.lat for n in net.nodes.values()]
    pad_lon = max(0.15, 0.06 * (max(lons) - min(lons)))
    pad_lat = max(0.12, 0.06 * (max(lats) - min(lats)))
    ax.set_xlim(min(lons) - pad_lon, max(lons) + pad_lon)
    ax.set_ylim(min(lats) - pad_lat, max(lats) + pad_lat)
    lat0 = (min(lats) + max(lats)) / 2
    ax.set_aspect(1 / math.cos(math.radians(lat0)))
    ax.set_xlabel("longitude [°E]")
    ax.set_ylabel("latitude [°N]")
    ax.grid(True, color="#dcd8cc", lw=0.6, zorder=0)

    # scale bar, bottom left
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    km_per_deg = haversine_m(0.0, lat0, 1.0, lat0) / 1000.0
    bar_km = _nice_km((x1 - x0) * km_per_deg)
    bx, by = x0 + 0.03 * (x1 - x0), y0 + 0.04 * (y1 - y0)
    ax.plot([bx, bx + bar_km / km_per_deg], [by, by], color="#1b1b1b", lw=3, zorder=30)
    ax.text(bx, by + 0.015 * (y1 - y0), f"{bar_km:g} km", fontsize=9, zorder=30, path_effects=halo)
    ax.text(
        bx,
        by - 0.03 * (y1 - y0),
        f"WGS84; 1° lon ≈ {km_per_deg:.0f} km at {lat0:.1f}° N",
        fontsize=7.5,
        color="#555555",
        zorder=30,
        path_effects=halo,
    )

    # legend: road classes present, site kinds present, RSUs
    handles: list[Any] = []
    for cls in RoadClass:
        if cls.value in s.km_by_class:
            colour, width, _ = _ROAD_STYLE[cls]
            ls = (0, (3, 1.5)) if cls is RoadClass.SERVICE else "solid"
            label = f"{cls.value} ({s.km_by_class[cls.value]:.0f} km)"
            handles.append(Line2D([], [], color=colour, lw=width * 1.6, ls=ls, label=label))
    for kind, n in ((SiteKind(k), n) for k, n in s.sites_by_kind.items()):
        marker, face, size, label = _SITE_STYLE[kind]
        handles.append(
            Line2D(
                [], [], ls="none", marker=marker, markersize=math.sqrt(size) * 0.9,
                markerfacecolor=face, markeredgecolor="#1b1b1b", label=f"{label} ({n})",
            )
        )  # fmt: skip
    if net.rsus:
        handles.append(
            Line2D(
                [], [], ls="none", marker="o", markersize=4, markerfacecolor=_RSU_COLOUR,
                markeredgewidth=0, label=f"roadside unit ({s.rsus})",
            )
        )  # fmt: skip
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.92, borderpad=0.8)

    ax.set_title(
        title
        or f"{net.name.capitalize()} network: {sum(s.sites_by_kind.values())} sites, "
        f"{s.road_km:,.0f} km of road, {s.rsus} roadside units",
        fontsize=13,
        fontweight="bold",
    )
    out = Path(path)
    fig.savefig(out, format="png", bbox_inches="tight", pad_inches=0.15)
    return out
