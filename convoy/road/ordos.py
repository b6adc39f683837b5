"""The built-in Ordos freight network and the distance table it is checked against.

``ordos_network()`` loads ``convoy/road/data/ordos.geojson``, which
``convoy/road/data/make_ordos.py`` generates from the sourced facts in ``ordos-sites.md``
(see ``convoy/road/data/ORDOS_NOTES.md`` for how, and which values are estimates).

``TOWN_DISTANCES_KM`` holds the road distances the network must reproduce within about 15 %
(DESIGN.md, "The default world"): read in a source where one was found (§6a of
``ordos-sites.md``, plus one document found later), otherwise the midpoint of the §6b estimate
(great-circle distance x 1.2-1.35), labelled ``[S-est]``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

from convoy.road.geojson import network_from_geojson
from convoy.road.network import RoadNetwork

DATA_PACKAGE = "convoy.road.data"
GEOJSON_NAME = "ordos.geojson"


@dataclass(frozen=True, slots=True)
class RefDistance:
    """A reference road distance between two sites of the Ordos network.

    Attributes:
        km: the reference value [km]: the sourced figure, or the midpoint of the estimate.
        low_km, high_km: the sourced figure twice, or the estimate's range [km].
        basis: what the figure measures.
        source: where it comes from.
        confidence: ``[V]`` read in the source, ``[S]`` secondhand, ``[S-est]`` an estimate.
    """

    km: float
    low_km: float
    high_km: float
    basis: str
    source: str
    confidence: str


def _read(km: float, basis: str, source: str, confidence: str = "[V]") -> RefDistance:
    return RefDistance(km, km, km, basis, source, confidence)


def _est(low_km: float, high_km: float) -> RefDistance:
    return RefDistance(
        (low_km + high_km) / 2,
        low_km,
        high_km,
        "great-circle x 1.2-1.35, midpoint of the range",
        "ordos-sites.md §6b (estimate, not a routed distance)",
        "[S-est]",
    )


_SITES_6A = "ordos-sites.md §6a"

# Keys are site ids of the Ordos network (towns unless noted).
TOWN_DISTANCES_KM: dict[tuple[str, str], RefDistance] = {
    ("dongsheng", "kangbashi"): _read(
        25, "'a brand new city 25 km from Dongsheng'", f"{_SITES_6A}; en.wikipedia Dongsheng"
    ),
    ("jungar-edz", "dongsheng"): _read(
        98,
        "road, Shageduo (Jungar EDZ) to Dongsheng",
        f"{_SITES_6A}; http://cnenc.net/b2181492.html",
    ),
    ("jungar-edz", "baotou"): _read(
        180, "road, Shageduo (Jungar EDZ) to Baotou", f"{_SITES_6A}; http://cnenc.net/b2181492.html"
    ),
    ("xuejiawan", "dongsheng"): _read(
        135,
        "'薛家湾镇，西距鄂尔多斯市所在地东胜区135公里' (§6b estimate 135-150 agrees)",
        "'准格尔旗自然概况', a user-uploaded document copy: "
        "http://wtabcd.cn/fanwen/fan/90/49743.html",
        "[S]",
    ),
    ("kangbashi", "ordos-station"): _read(
        8,
        "Ordos station to the city core (taken as Kangbashi) ≈ 8 km",
        f"{_SITES_6A}; Ordos railway station wiki",
    ),
    ("dongsheng", "baotou"): _est(115, 130),
    ("dongsheng", "shulinzhao"): _est(85, 95),
    ("dongsheng", "xini"): _est(120, 135),
    ("dongsheng", "galutu"): _est(195, 215),
    ("dongsheng", "wulan"): _est(220, 245),
    ("dongsheng", "qipanjing"): _est(300, 340),
    ("kangbashi", "galutu"): _est(165, 190),
    ("kangbashi", "wulan"): _est(200, 225),
    ("kangbashi", "xini"): _est(115, 125),
    ("kangbashi", "xuejiawan"): _est(150, 170),
    ("kangbashi", "baotou"): _est(135, 155),
    ("kangbashi", "qipanjing"): _est(285, 320),
    ("wulan", "qipanjing"): _est(105, 120),
    ("wulan", "galutu"): _est(115, 125),
    ("wulan", "xini"): _est(125, 140),
    ("xini", "baotou"): _est(165, 185),
    ("shulinzhao", "baotou"): _est(30, 35),
    ("xuejiawan", "baotou"): _est(165, 185),
    ("baotou", "qipanjing"): _est(345, 385),
    ("haerwusu-mine", "suancigou-ps"): _est(6, 8),
}
"""Reference road distances between sites [km], keyed by (site id, site id)."""

DISTANCE_TOLERANCE = 0.15
"""How far a network route may be from its reference distance (DESIGN.md: about 15 %)."""


@functools.cache
def ordos_network() -> RoadNetwork:
    """The built-in Ordos freight network, loaded once from the shipped GeoJSON."""
    text = resources.files(DATA_PACKAGE).joinpath(GEOJSON_NAME).read_text(encoding="utf-8")
    return network_from_geojson(json.loads(text), source=GEOJSON_NAME)
