"""Make the built-in Ordos network: ``ordos.geojson`` and ``ORDOS_NOTES.md`` beside this file.

Run ``python -m convoy.road.data.make_ordos`` after changing a table below; the output is
deterministic, and ``tests/test_ordos.py`` checks that the shipped files are what this script
writes.

How the network is made:

1. **Places** (``NODES``, ``SITES``) come from ``ordos-sites.md`` (the project's sourced fact
   sheet), each with its source and confidence code: ``[V]`` read in the source, ``[S]``
   secondhand, ``[S-est]`` an estimate. Junctions where roads meet are estimates.
2. **Roads** (``ROADS``) are chains of nodes: the expressways G65 and G18, national and
   provincial roads to the banner seats, and short access roads to sites off the corridors.
   Each link becomes two ``Edge`` objects, one per direction.
3. **Geometry is schematic.** Between two nodes the road leaves the great circle in smooth
   bends (a sum of three sine harmonics, fixed per link by a seeded generator) whose
   amplitude is solved so that the polyline is ``detour`` times the great-circle distance.
   ``detour`` is set per link (1.1-1.35, the factor ``ordos-sites.md`` §6b calibrates on
   sourced pairs) so that town-to-town routes land near the reference distances in
   ``convoy.road.ordos.TOWN_DISTANCES_KM``. Edge length is always the computed polyline
   length.
4. **Elevations** at the nodes come from the sources where found, else are estimates; along
   an edge the profile interpolates the end elevations plus an illustrative relief term
   that is zero at both ends. Grades follow from the profile.
5. **RSUs** stand every 8 km along G65 and G18 (on the edges of the listed direction; their
   500 m radius covers both carriageways).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path

from convoy.road.geojson import dumps_geojson, network_to_geojson
from convoy.road.network import (
    Edge,
    JunctionType,
    Node,
    RoadClass,
    RoadNetwork,
    RoadsideUnit,
    SignalPhase,
    SignalPlan,
    Site,
    SiteKind,
    haversine_m,
    polyline_length_m,
)
from convoy.road.ordos import DISTANCE_TOLERANCE, GEOJSON_NAME, TOWN_DISTANCES_KM

HERE = Path(__file__).resolve().parent
NOTES_NAME = "ORDOS_NOTES.md"

KMH = 1 / 3.6
RSU_SPACING_M = 8_000.0
RSU_FIRST_M = 4_000.0
RSU_RADIUS_M = 500.0  # C-V2X roadside units reach ~300-1,000 m (see RoadsideUnit)
GROSS_LIMIT_T = 49.0  # GB 1589-2016: 6-axle tractor-semitrailer gross weight limit
SHAPE_STEP_KM = 1.5  # at most this far between shape points
BEND_KM = 25.0  # about one bend (half-wave) per this many km of great circle
WIGGLE_KM = 4.0  # and one small wiggle per this many

# --------------------------------------------------------------------------------------------
# Sources quoted more than once

OS = "ordos-sites.md"
CNENC = "http://cnenc.net/b2181492.html"
CWESTC = "http://www.cwestc.com/newshtml/2025-6-3/867409.shtml"
CYZONE = "https://cyzone.cn/article/789646.html"
CHINADAILY_DIANSHIGOU = "http://regional.chinadaily.com.cn/ordosen/en/2022-12/02/c_879849.htm"
CHINADAILY_2023 = "http://regional.chinadaily.com.cn/ordosen/en/2023-04/18/c_879846.htm"
BOERJIANG = "https://m.iichajd.com/dm_72987/"
HANGGIN = "http://www.zwbk2009.com/index.php?title=%E6%9D%AD%E9%94%A6%E6%97%97"


# --------------------------------------------------------------------------------------------
# Nodes: towns, junctions and site access points


@dataclass(frozen=True)
class Place:
    """A node as written here: where it is, how high, and where those numbers come from."""

    id: str
    lat: float
    lon: float
    elevation_m: float
    note: str  # source / confidence of the coordinates and the elevation


NODES: tuple[Place, ...] = (
    # Towns (ordos-sites.md §1)
    Place("dongsheng", 39.767, 109.917, 1299, "coords, elev: en.wikipedia Dongsheng [V]"),
    Place("kangbashi", 39.604, 109.785, 1305, "Genghis Khan Plaza; elev: Ordos infobox [V]"),
    Place("wulan", 39.0897, 107.9762, 1367, "Otog Banner infobox [V]"),
    Place("xini", 39.833, 108.733, 1391, "Hanggin Banner page [V]"),
    Place("galutu", 38.583, 108.850, 1299, "Uxin Banner page [V]; elev doubtful (= Dongsheng's)"),
    Place("shulinzhao", 40.40, 109.97, 1009, "coords [S-est]; elev: Dalad Banner page [V]"),
    Place("xuejiawan", 39.867, 111.233, 1180, "Jungar Banner coords [V]; elev [S-est]"),
    Place("baotou", 40.6213, 109.9532, 1065, "Baotou municipal govt [V]"),
    Place(
        "qipanjing", 39.37, 107.02, 1250, "coords [S-est]; elev [S-est] (Mengxi, N: 1074-1086 [V])"
    ),
    Place("shageduo", 39.667, 110.867, 1230, "cnenc.net (110°52′E, 39°40′N) [V]; elev [S-est]"),
    Place("dalu", 39.961, 111.268, 1010, "GEM approximate point for Dalu town [V]; elev [S-est]"),
    # Junctions: all [S-est]
    Place("j-g18-shageduo", 39.72, 110.86, 1260, "G18 interchange for Shageduo [S-est]"),
    Place("j-g18-dalad-south", 39.755, 110.30, 1360, "G18 junction, southern Dalad [S-est]"),
    Place(
        "j-g18-west",
        39.80,
        109.55,
        1430,
        f"G18 west of Dongsheng [S-est]; Bo'erjianghaizi, 50 km W: 1371-1615 m {BOERJIANG}",
    ),
    Place("j-g18-hongqingliang", 39.81, 109.37, 1410, "G18 junction for Hongqingliang [S-est]"),
    Place("j-g65-altan-xire", 39.565, 109.83, 1330, "G65 at Altan Xire / Ordos station [S-est]"),
    Place("j-g65-buertai", 39.44, 110.01, 1240, "G65 junction for Buertai [S-est]"),
    Place("j-g65-ulan-mulun", 39.34, 110.11, 1160, "G65 at Ulan Mulun [S-est]"),
    Place("j-ejin-sw", 39.30, 109.55, 1340, "fork of the Uxin and Otog roads [S-est]"),
    Place("j-uxin-east", 38.78, 109.35, 1290, "Uxin road junction for Bayangaole [S-est]"),
    Place("j-river-east", 40.22, 110.90, 1000, "Yellow River south bank [S-est]"),
    Place("j-river-mid", 40.30, 110.45, 1005, "Yellow River south bank, Dalad east [S-est]"),
    Place("j-river-west", 40.42, 109.35, 1020, "Yellow River south bank, Dalad west [S-est]"),
    Place("j-jungar-mines", 39.735, 111.235, 1220, "Jungar mining-area road junction [S-est]"),
    # Site access points (coordinates from the site rows below; elevations [S-est])
    Place("s-haerwusu", 39.7310, 111.2583, 1240, "site coords [S]; elev [S-est]"),
    Place("s-haerwusu-loop", 39.7215, 111.2285, 1200, "site coords [S]; elev [S-est]"),
    Place("s-heidaigou", 39.700, 111.271, 1230, "site coords [S]; elev [S-est]"),
    Place("s-suancigou-ps", 39.7117, 111.2005, 1190, "GEM exact [V]; elev [S-est]"),
    Place("s-zhujiaping-ps", 39.6052, 111.3697, 1060, "GEM exact [V]; elev [S-est]"),
    Place("s-xuejiawan-ps", 39.8277, 111.2679, 1150, "GEM exact [V]; elev [S-est]"),
    Place("s-wulanhada", 39.72, 110.25, 1330, "site coords [S]; elev [S-est]"),
    Place("s-baijialiang", 39.53, 110.245, 1300, "site coords [S]; elev [S-est]"),
    Place("s-dianshigou", 39.80, 110.33, 1330, "southern Dalad [V]; coords, elev [S-est]"),
    Place("s-chaonaoliang", 39.8333, 110.3753, 1290, "GEM exact [V]; elev [S-est]"),
    Place("s-hongqingliang", 39.8758, 109.3678, 1380, "GEM [V]; elev [S-est]"),
    Place("s-ordos-station", 39.5598, 109.8372, 1320, "station coords [V]; elev [S-est]"),
    Place("s-buertai", 39.43, 110.03, 1250, "coords, elev [S-est]"),
    Place("s-bulianta", 39.33, 110.13, 1170, "coords, elev [S-est]"),
    Place("s-bayangaole", 38.7427, 109.3996, 1300, "SourceWatch [V]; elev [S-est]"),
    Place("s-dalad-ps", 40.37, 110.04, 1010, "location not found; coords, elev [S-est]"),
    Place("s-jianyuan", 39.3429, 106.9951, 1300, "SourceWatch [V]; elev [S-est]"),
    Place("s-otog-edz", 39.42, 107.03, 1150, "zone centre between Qipanjing and Mengxi [S-est]"),
    Place("s-junzheng-ps", 39.435, 107.045, 1120, "in the Otog high-tech zone; coords [S-est]"),
    Place("s-kargobot-otog", 39.385, 107.065, 1220, "in the Otog EDZ; coords [S-est]"),
)


# --------------------------------------------------------------------------------------------
# Roads


@dataclass(frozen=True)
class Road:
    """A road as a chain of nodes; every link becomes one edge per direction.

    Attributes:
        name: road name written on every edge.
        road_class: see ``RoadClass``.
        lanes: lanes per direction.
        speed_kmh: legal speed limit for heavy trucks [km/h].
        chain: node ids in order.
        detour: road length / great-circle distance, one per link (or one for all).
        relief_m: illustrative relief along each link [m], zero at the ends (one or one each).
        rsus: whether roadside units stand along it.
        note: where the road's existence and route come from.
    """

    name: str
    road_class: RoadClass
    lanes: int
    speed_kmh: float
    chain: tuple[str, ...]
    detour: float | tuple[float, ...]
    relief_m: float | tuple[float, ...] = 0.0
    rsus: bool = False
    note: str = ""

    def per_link(self, v: float | tuple[float, ...], k: int) -> float:
        return v if isinstance(v, float | int) else v[k]


MW, TR, PR = RoadClass.MOTORWAY, RoadClass.TRUNK, RoadClass.PRIMARY
SE, TE, SV = RoadClass.SECONDARY, RoadClass.TERTIARY, RoadClass.SERVICE

# Speed limits: expressways 100 km/h for goods vehicles (Regulations for the Implementation of
# the Road Traffic Safety Law, art. 78); the others are typical posted limits (estimates).
ROADS: tuple[Road, ...] = (
    Road(
        "G65",
        MW,
        2,
        100,
        (
            "baotou",
            "shulinzhao",
            "dongsheng",
            "kangbashi",
            "j-g65-altan-xire",
            "j-g65-buertai",
            "j-g65-ulan-mulun",
        ),
        detour=(1.32, 1.27, 1.17, 1.15, 1.15, 1.15),
        relief_m=(-35.0, 70.0, 30.0, 15.0, 25.0, 20.0),
        rsus=True,
        note="G65 Baomao expressway, Baotou-Dongsheng opened 2006; the Ordos-Baotou corridor "
        f"({OS} §5). Widening to 8 lanes approved 2016; modelled at 2 lanes per direction.",
    ),
    Road(
        "G18",
        MW,
        2,
        100,
        (
            "xuejiawan",
            "j-g18-shageduo",
            "j-g18-dalad-south",
            "dongsheng",
            "j-g18-west",
            "j-g18-hongqingliang",
            "xini",
            "qipanjing",
        ),
        detour=(1.16, 1.16, 1.16, 1.21, 1.21, 1.21, 1.22),
        relief_m=(40.0, 50.0, -30.0, 60.0, 30.0, 40.0, 80.0),
        rsus=True,
        note=f"G18 Rongwu expressway: Xuejiawan East - Dafanpu - Dongsheng - Qipanjing ({OS} §5); "
        f"its Dongsheng-Chagannaoer section passes through Hanggin Banner ({HANGGIN}).",
    ),
    Road(
        "Kangbashi-G18 link",
        PR,
        2,
        80,
        ("kangbashi", "j-g18-west"),
        detour=1.15,
        relief_m=20.0,
        note="approximate: Kangbashi's road north-west to G18",
    ),
    Road(
        "Yellow River-side road",
        PR,
        2,
        80,
        ("xuejiawan", "dalu", "j-river-east", "j-river-mid", "shulinzhao", "j-river-west"),
        detour=1.10,
        relief_m=(-40.0, 15.0, 10.0, 10.0, 10.0),
        note=f"the 'Ordos Yellow River-side class-1 road' serving Dalu park ({OS} §5); route "
        "along the south bank approximate",
    ),
    Road(
        "G18 Shageduo spur",
        PR,
        1,
        70,
        ("shageduo", "j-g18-shageduo"),
        detour=1.2,
        note="approximate",
    ),
    Road(
        "Jungar-Dalad road",
        PR,
        1,
        70,
        ("j-g18-shageduo", "j-river-mid"),
        detour=1.2,
        relief_m=60.0,
        note="approximate: Shageduo north to the Yellow River road (Shageduo-Baotou 180 km, "
        f"{CNENC})",
    ),
    Road(
        "Kangbashi-Uxin road",
        PR,
        1,
        70,
        ("kangbashi", "j-ejin-sw", "j-uxin-east", "galutu"),
        detour=1.20,
        relief_m=(30.0, 40.0, 20.0),
        note="approximate",
    ),
    Road(
        "Ejin Horo-Otog road",
        PR,
        1,
        70,
        ("j-ejin-sw", "wulan"),
        detour=1.25,
        relief_m=60.0,
        note="approximate",
    ),
    Road("Otog-Uxin road", PR, 1, 70, ("wulan", "galutu"), detour=1.27, relief_m=40.0),
    Road("Otog-Hanggin road", PR, 1, 70, ("wulan", "xini"), detour=1.27, relief_m=50.0),
    Road(
        "Otog-Qipanjing road",
        PR,
        1,
        70,
        ("wulan", "qipanjing"),
        detour=1.27,
        relief_m=150.0,
        note="approximate; climbs over the Arbus hills east of Zhuozi Shan (relief illustrative)",
    ),
    Road(
        "Hanggin-Yellow River road",
        PR,
        1,
        70,
        ("xini", "j-river-west"),
        detour=1.12,
        relief_m=-60.0,
        note="approximate: across the Kubuqi desert from Xini to the Yellow River",
    ),
    Road(
        "Jungar mining road",
        SE,
        1,
        60,
        ("xuejiawan", "j-jungar-mines", "s-zhujiaping-ps"),
        detour=1.2,
        relief_m=(30.0, -20.0),
        note="approximate",
    ),
    Road(
        "Nalin Taohai road",
        TE,
        1,
        50,
        ("j-g18-dalad-south", "s-baijialiang"),
        detour=1.2,
        relief_m=-20.0,
        note="approximate",
    ),
    Road(
        "Bainijing road",
        TE,
        1,
        50,
        ("j-g18-dalad-south", "s-dianshigou"),
        detour=1.15,
        note="approximate",
    ),
    # Site access (mine haul roads, plant and station gates): short, approximate
    *(
        Road("access", SV, 1, 40, (a, b), detour=1.15)
        for a, b in (
            ("j-jungar-mines", "s-haerwusu"),
            ("j-jungar-mines", "s-haerwusu-loop"),
            ("j-jungar-mines", "s-heidaigou"),
            ("j-jungar-mines", "s-suancigou-ps"),
            ("xuejiawan", "s-xuejiawan-ps"),
            ("j-g18-dalad-south", "s-wulanhada"),
            ("s-dianshigou", "s-chaonaoliang"),
            ("j-g18-hongqingliang", "s-hongqingliang"),
            ("j-g65-altan-xire", "s-ordos-station"),
            ("j-g65-buertai", "s-buertai"),
            ("j-g65-ulan-mulun", "s-bulianta"),
            ("j-uxin-east", "s-bayangaole"),
            ("shulinzhao", "s-dalad-ps"),
            ("qipanjing", "s-jianyuan"),
            ("qipanjing", "s-otog-edz"),
            ("s-otog-edz", "s-junzheng-ps"),
            ("qipanjing", "s-kargobot-otog"),
        )
    ),
)


# --------------------------------------------------------------------------------------------
# Sites


@dataclass(frozen=True)
class SiteRow:
    """A site as written here (see ``convoy.road.network.Site``)."""

    id: str
    kind: SiteKind
    name_en: str
    name_zh: str
    node: str
    lat: float
    lon: float
    capacity: float | None
    source: str
    confidence: str


T, CM, PP, CP = SiteKind.TOWN, SiteKind.COAL_MINE, SiteKind.POWER_PLANT, SiteKind.CHEMICAL_PARK
RL, CS, SW, PH = (
    SiteKind.RAIL_LOADING,
    SiteKind.CHARGING_STATION,
    SiteKind.SWAP_STATION,
    SiteKind.PLATOON_HUB,
)

# capacity: Mt/yr for mines, MW for power plants, charging posts for charging stations.
SITES: tuple[SiteRow, ...] = (
    # --- towns: the eight of DESIGN.md and Qipanjing (ordos-sites.md §1)
    SiteRow(
        "dongsheng", T, "Dongsheng", "东胜区", "dongsheng", 39.767, 109.917, None,
        "https://en.wikipedia.org/wiki/Dongsheng (fr.wikipedia gives 39.783, 109.933)", "[V]",
    ),
    SiteRow(
        "kangbashi", T, "Kangbashi", "康巴什区", "kangbashi", 39.604, 109.785, None,
        "https://en.wikipedia.org/wiki/Ordos_City (Genghis Khan Plaza, Ordos city seat)", "[V]",
    ),
    SiteRow(
        "wulan", T, "Otog (Wulan)", "鄂托克旗乌兰镇", "wulan", 39.0897, 107.9762, None,
        "https://wikiwand.com/en/Otog_Banner (banner infobox coordinates; seat = Ulan)", "[V]",
    ),
    SiteRow(
        "xini", T, "Hanggin (Xini)", "杭锦旗锡尼镇", "xini", 39.833, 108.733, None,
        "https://en.wiki.x.io/wiki/Hanggin_Banner", "[V]",
    ),
    SiteRow(
        "galutu", T, "Uxin (Galutu)", "乌审旗嘎鲁图镇", "galutu", 38.583, 108.850, None,
        "https://en.wikipedia.org/wiki/Uxin_Banner ; https://search.com.vn/wiki/en/Uxin_Banner",
        "[V] coords; elevation doubtful",
    ),
    SiteRow(
        "shulinzhao", T, "Dalad (Shulinzhao)", "达拉特旗树林召镇", "shulinzhao", 40.40, 109.97,
        None,
        "elevation: https://friendlywiki.com/article/index.php?title=Dalad_Banner ; "
        "coordinates not found",
        "elev [V]; coords [S-est]",
    ),
    SiteRow(
        "xuejiawan", T, "Jungar (Xuejiawan)", "准格尔旗薛家湾镇", "xuejiawan", 39.867, 111.233,
        None, "https://depl.abcdef.wiki/wiki/Jung-Gar-Banner (39°52′N 111°14′E)",
        "[V] (banner coords; seat = Xuejiawan)",
    ),
    SiteRow(
        "baotou", T, "Baotou", "包头市", "baotou", 40.6213, 109.9532, None,
        "https://wikimili.com/en/Baotou ; https://www.baotou.gov.cn/info/1683/16061.htm", "[V]",
    ),
    SiteRow(
        "qipanjing", T, "Qipanjing", "鄂托克旗棋盘井镇", "qipanjing", 39.37, 107.02, None,
        "https://newton.com.tw/wiki/棋盤井鎮/2458309 ; "
        "https://en.wikipedia.org/wiki/Qipanjing,_Inner_Mongolia (no coordinates)",
        "[S-est] coords",
    ),
    # --- coal mines (ordos-sites.md §2); capacity in Mt/yr
    SiteRow(
        "haerwusu-mine", CM, "Haerwusu open-pit mine", "哈尔乌素露天煤矿", "s-haerwusu",
        39.7310, 111.2583, 35.0,
        "GEM coords 39.731044, 111.258324 as quoted in a public GitHub route brief; "
        f"35 Mt/yr approved (2016 output 27.4): {CWESTC}",
        "coords [S]; cap [V]",
    ),
    SiteRow(
        "heidaigou-mine", CM, "Heidaigou open-pit mine", "黑岱沟露天煤矿", "s-heidaigou",
        39.700, 111.271, 34.0,
        "coords: public GitHub coal-site table ('middle of published mine boundaries', may be "
        f"~5 km off); 34 Mt/yr approved: {CWESTC}",
        "coords [S] (low confidence); cap [V]",
    ),
    SiteRow(
        "bulianta-mine", CM, "Bulianta coal mine (Shendong)", "补连塔煤矿", "s-bulianta",
        39.33, 110.13, 28.0,
        "secondhand page 'China's top ten benchmark coal mines' (28 Mt/yr approved, opened "
        "1997; Ejin Horo, Ulan Mulun town); coordinates not found",
        "facts [V]; coords [S-est]",
    ),
    SiteRow(
        "buertai-mine", CM, "Buertai coal mine (Shendong)", "布尔台煤矿", "s-buertai",
        39.43, 110.03, None, "not found (Ejin Horo)", "[S-est]",
    ),
    SiteRow(
        "chaonaoliang-mine", CM, "Chaonaoliang open-pit mine", "潮脑梁露天煤矿",
        "s-chaonaoliang", 39.8333, 110.3753, 8.0,
        "https://www.gem.wiki/Chaonaoliang_Coal_Mine (GEM 'exact'; Dalad, Bainijing town)",
        "[V]",
    ),
    SiteRow(
        "hongqingliang-mine", CM, "Hongqingliang coal mine", "红庆梁煤矿", "s-hongqingliang",
        39.8758, 109.3678, 6.0, "https://www.gem.wiki/Hongqingliang_Coal_Mine", "[V]",
    ),
    SiteRow(
        "bayangaole-mine", CM, "Bayangaole (Bayangol) coal mine", "巴彦高勒煤矿",
        "s-bayangaole", 38.7427, 109.3996, 4.0,
        "https://dev.sourcewatch.org/index.php?title=Bayangol_Coal_Mine", "[V]",
    ),
    SiteRow(
        "jianyuan-mine", CM, "Jianyuan coal mine", "建元煤矿", "s-jianyuan", 39.3429, 106.9951,
        5.0,
        "https://dev.sourcewatch.org/index.php?title=Jianyuan_Coal_Mine "
        "(Otog, A'erbasi sumu, near Qipanjing)",
        "[V]",
    ),
    SiteRow(
        "baijialiang-mine", CM, "Baijialiang open-pit mine", "白家梁露天煤矿", "s-baijialiang",
        39.53, 110.245, None,
        "public GitHub dataset README: E110°14′14″-110°15′07″, N39°31′34″-39°31′53″ "
        "(Ejin Horo, Nalin Taohai town)",
        "[S]",
    ),
    SiteRow(
        "wulanhada-mine", CM, "Wulanhada coal mine (Shenshan)", "乌兰哈达煤矿", "s-wulanhada",
        39.72, 110.25, None,
        "https://m.wenke99.com/p-14334455.html (garbled DMS; 10 km from S213)", "[S]",
    ),
    # --- power plants (ordos-sites.md §3); capacity in MW (operating)
    SiteRow(
        "suancigou-ps", PP, "Jingtai Suancigou power station", "京能酸刺沟电厂",
        "s-suancigou-ps", 39.7117, 111.2005, 600.0,
        "https://www.gem.wiki/Jingtai_Zhunge%27er_Suanlagou_power_station "
        "(2×300 MW since 2010; 2×660 MW under construction)",
        "[V]",
    ),
    SiteRow(
        "xuejiawan-ps", PP, "Zhunneng Xuejiawan waste-coal power plant", "神华准能薛家湾矸石电厂",
        "s-xuejiawan-ps", 39.8277, 111.2679, 960.0,
        "https://www.gem.wiki/Shenhua_Zhunneng_Waste_Coal_Power_Plant_Phase_II "
        "(2×150 + 2×330 MW, 2005-2011)",
        "[V]",
    ),
    SiteRow(
        "zhujiaping-ps", PP, "Zhunger Zhujiaping power station", "华厦朱家坪电厂",
        "s-zhujiaping-ps", 39.6052, 111.3697, 1320.0,
        "https://www.gem.wiki/Zhunger_Zhujiaping_power_station (2×660 MW, 2021)", "[V]",
    ),
    SiteRow(
        "junzheng-ps", PP, "Junzheng self-supply power plant (Otog high-tech zone)",
        "君正能源自备电厂", "s-junzheng-ps", 39.435, 107.045, 660.0,
        "https://cnsubsites.chinadaily.com.cn/investordos/2024-10/22/c_183298.htm "
        "(2×330 MW in the Otog Banner high-tech zone); coordinates not found",
        "facts [V]; coords [S-est]",
    ),
    SiteRow(
        "dalad-ps", PP, "Dalad (Dalate) power plant", "达拉特发电厂", "s-dalad-ps", 40.37, 110.04,
        None,
        "http://zgdlhg.com/xwzx/qyxw/20200601123143.html ; "
        "http://ztpd.nmgnews.com.cn/system/2010/01/08/010364039.shtml (13.892 TWh in 2009; "
        "1×1000 MW phase V approved 2020); location not found, placed near Shulinzhao",
        "facts [V]; coords [S-est]",
    ),
    # --- chemical and industrial parks (ordos-sites.md §3)
    SiteRow(
        "dalu-park", CP, "Dalu Industrial Park (Jungar)", "准格尔旗大路工业园区", "dalu",
        39.961, 111.268, None,
        "http://m.seenwhilewandering.com/news/d39527.html ; https://ordos.gov.cn/gk_128120/"
        "zdjsxm/xmsg/201805/t20180517_2508380.html (350 km²; coal-chemical and "
        "coal-power-aluminium); point = Dalu town (GEM approximate)",
        "facts [V]; coords [V-approx]",
    ),
    SiteRow(
        "otog-edz", CP, "Otog Economic Development Zone (Otog high-tech zone)",
        "鄂托克经济开发区（鄂托克旗高新技术产业开发区）", "s-otog-edz", 39.42, 107.03, None,
        "https://newton.com.tw/wiki/棋盤井鎮/2458309 (Qipanjing industrial park, autonomous-"
        "region level since 2001, part of the Mengxi ETDZ); coordinates not found",
        "facts [V]; coords [S-est]",
    ),
    SiteRow(
        "jungar-edz", CP, "Jungar Economic Development Zone (Shageduo)", "准格尔经济开发区",
        "shageduo", 39.667, 110.867, None,
        f"{CNENC} (22.36 km² industrial land; 110°52′E, 39°40′N)", "[V]",
    ),
    # --- rail loading (ordos-sites.md §4)
    SiteRow(
        "haerwusu-loop", RL, "Haerwusu rail loading loop", "哈尔乌素装车站（环线+筒仓）",
        "s-haerwusu-loop", 39.7215, 111.2285, None,
        "public GitHub route brief: loop checked on satellite imagery, 0.22 km from the line",
        "[S]",
    ),
    SiteRow(
        "ordos-station", RL, "Ordos station (Baoxi railway)", "鄂尔多斯站", "s-ordos-station",
        39.5598, 109.8372, None,
        "https://hessslslslsls.azureedge.net/wiki/Ordos_railway_station ; terminus of the "
        "Hohhot-Jungar-Ordos railway: http://www.buyroughgems.com/news/news/201312/699.html ; "
        "coal loading here is assumed",
        "coords [V]; loading [S-est]",
    ),
    # --- charging and battery swap
    SiteRow(
        "kargobot-otog-charging", CS, "KargoBot Otog operations centre charging",
        "卡尔动力鄂托克旗运营中心充电站", "s-kargobot-otog", 39.385, 107.065, 110.0,
        f"{CYZONE} (Otog Banner EDZ: R&D and operations centre, >6,000 m², 110 charging posts); "
        "coordinates not found",
        "facts [V]; coords [S-est]",
    ),
    SiteRow(
        "dianshigou-1", SW, "Dianshigou No. 1 charging and swap station",
        "达拉特旗南部1号重卡充换电站", "s-dianshigou", 39.80, 110.33, None,
        f"{CHINADAILY_DIANSHIGOU} (SPIC Qiyuan and CNPC; southern Dalad between Jungar and "
        "Dongsheng; 30 coal trucks; trial operation Dec 2022); coordinates and the Chinese "
        "place name not found (name_zh descriptive)",
        "facts [V]; coords [S-est]",
    ),
    SiteRow(
        "dianshigou-2", SW, "Dianshigou No. 2 charging and swap station",
        "达拉特旗南部2号重卡充换电站", "s-dianshigou", 39.80, 110.33, None,
        f"{CHINADAILY_DIANSHIGOU} (as No. 1)", "facts [V]; coords [S-est]",
    ),
    SiteRow(
        "dongsheng-swap", SW, "Dongsheng swap station (placeholder)", "东胜重卡换电站（示意）",
        "dongsheng", 39.767, 109.917, None,
        "placeholder, no source for a station here; Ordos had 60 charging stations for 1,183 "
        f"electric heavy trucks in Apr 2023: {CHINADAILY_2023}",
        "[S-est]",
    ),
    SiteRow(
        "jungar-mines-swap", SW, "Jungar mining-area swap station (placeholder)",
        "准格尔矿区重卡换电站（示意）", "j-jungar-mines", 39.735, 111.235, None,
        f"placeholder, no source for a station here (see {CHINADAILY_2023})", "[S-est]",
    ),
    # --- platoon hubs
    SiteRow(
        "kargobot-otog-hub", PH, "KargoBot Otog R&D and operations centre",
        "卡尔动力鄂托克旗研发运营中心", "s-kargobot-otog", 39.385, 107.065, None,
        f"{CYZONE} (the company's largest R&D centre, in the Otog Banner EDZ); coordinates not "
        "found",
        "facts [V]; coords [S-est]",
    ),
    SiteRow(
        "kangbashi-hub", PH, "Kangbashi platoon hub (KargoBot R&D HQ)",
        "康巴什编队枢纽（卡尔动力全球创新研发总部）", "kangbashi", 39.604, 109.785, None,
        f"{CYZONE} (global innovation R&D HQ opened in Kangbashi, June 2024); "
        "https://dignews.cc/p/c8feac6a5f3db462.html (first ICV test plate, Mar 2024); "
        "the hub's role and location are assumed",
        "facts [V]; hub [S-est]",
    ),
    SiteRow(
        "baotou-hub", PH, "Baotou cross-city platoon hub (Ordos-Baotou)",
        "包头跨城编队枢纽（鄂尔多斯—包头）", "baotou", 40.6213, 109.9532, None,
        "https://reportify.cn/news/1124777704009371648 (May 2025: approved for Ordos -> Baotou "
        "cross-city autonomous freight); hub at the G65's Baotou end assumed",
        "facts [V]; location [S-est]",
    ),
)  # fmt: skip

# Illustrative junction control (no source): Dongsheng's urban crossing is signalised, Wulan
# has a roundabout. Phases name the incoming edges with green.
SIGNALISED = "dongsheng"
SIGNAL_PLAN = SignalPlan(
    phases=(
        SignalPhase(45.0, ("shulinzhao__dongsheng", "kangbashi__dongsheng")),
        SignalPhase(5.0, ()),
        SignalPhase(40.0, ("j-g18-dalad-south__dongsheng", "j-g18-west__dongsheng")),
        SignalPhase(5.0, ()),
    )
)
ROUNDABOUT = "wulan"

# --------------------------------------------------------------------------------------------
# Geometry: schematic bends solved for a detour factor

M_PER_DEG = math.pi * 6_371_008.8 / 180.0


def edge_id(a: str, b: str) -> str:
    """Id of the edge from node ``a`` to node ``b``."""
    return f"{a}__{b}"


def _bent_polyline(
    a: tuple[float, float], b: tuple[float, float], detour: float, seed: str
) -> list[tuple[float, float]]:
    """(lon, lat) points from ``a`` to ``b`` whose length is ``detour`` x great circle.

    The road departs from the straight line by a sum of three sine harmonics, each zero at
    both ends: a bow over the whole link, bends of about ``BEND_KM`` and wiggles of about
    ``WIGGLE_KM``, with signs and mixing drawn from a generator seeded by ``seed`` (so the
    output is deterministic). The overall amplitude is found by bisection: length grows
    with it.
    """
    gc_m = haversine_m(a[0], a[1], b[0], b[1])
    gc_km = gc_m / 1000
    rng = random.Random(seed)
    harmonics = (
        (1, rng.choice((-1, 1)) * rng.uniform(0.8, 1.2)),
        (max(2, round(gc_km / BEND_KM)), rng.choice((-1, 1)) * rng.uniform(0.3, 0.5)),
        (max(3, round(gc_km / WIGGLE_KM)), rng.choice((-1, 1)) * rng.uniform(0.015, 0.03)),
    )
    n = max(4 * harmonics[2][0], math.ceil(gc_km / SHAPE_STEP_KM))
    lat0 = math.radians((a[1] + b[1]) / 2)
    dx = (b[0] - a[0]) * math.cos(lat0) * M_PER_DEG
    dy = (b[1] - a[1]) * M_PER_DEG
    ux, uy = -dy / math.hypot(dx, dy), dx / math.hypot(dx, dy)  # unit normal

    def points(amp_m: float) -> list[tuple[float, float]]:
        pts = [a]
        for i in range(1, n):
            t = i / n
            off = amp_m * sum(w * math.sin(j * math.pi * t) for j, w in harmonics)
            x, y = t * dx + off * ux, t * dy + off * uy
            lon = a[0] + x / (math.cos(lat0) * M_PER_DEG)
            lat = a[1] + y / M_PER_DEG
            pts.append((round(lon, 6), round(lat, 6)))
        return [*pts, b]

    target = detour * gc_m
    lo, hi = 0.0, gc_m
    for _ in range(60):
        mid = (lo + hi) / 2
        if polyline_length_m(points(mid)) < target:
            lo = mid
        else:
            hi = mid
    return points((lo + hi) / 2)


def _stations(geometry: list[tuple[float, float]]) -> list[float]:
    legs = (haversine_m(p[0], p[1], q[0], q[1]) for p, q in itertools.pairwise(geometry))
    return [0.0, *itertools.accumulate(legs)]


def _profile(s: list[float], z0: float, z1: float, relief_m: float) -> list[float]:
    """Elevation at stations ``s``: linear between the ends plus relief that is 0 at both."""
    length = s[-1]
    out = []
    for x in s:
        u = x / length
        bump = 0.75 * math.sin(math.pi * u) + 0.25 * math.sin(3 * math.pi * u)
        out.append(round(z0 + (z1 - z0) * u + relief_m * bump, 1))
    out[0], out[-1] = z0, z1
    return out


def _edge(
    road: Road, a: Place, b: Place, geometry: list[tuple[float, float]], elevation: list[float]
) -> Edge:
    s = _stations(geometry)
    length = round(polyline_length_m(geometry), 2)
    stations = [round(x, 2) for x in s[:-1]] + [length]
    return Edge(
        id=edge_id(a.id, b.id),
        from_node=a.id,
        to_node=b.id,
        length_m=length,
        lanes=road.lanes,
        speed_limit_mps=round(road.speed_kmh * KMH, 2),
        road_class=road.road_class,
        geometry=tuple(geometry),
        stations_m=tuple(stations),
        elevation_m=tuple(elevation),
        max_weight_t=None if road.road_class is RoadClass.SERVICE else GROSS_LIMIT_T,
        name=road.name,
    )


def _point_at(e: Edge, offset_m: float) -> tuple[float, float]:
    """(lon, lat) at ``offset_m`` along ``e``, interpolated between shape points."""
    s = e.stations_m
    for k in range(1, len(s)):
        if offset_m <= s[k]:
            f = (offset_m - s[k - 1]) / (s[k] - s[k - 1])
            (x0, y0), (x1, y1) = e.geometry[k - 1], e.geometry[k]
            return round(x0 + f * (x1 - x0), 6), round(y0 + f * (y1 - y0), 6)
    return e.geometry[-1]


# --------------------------------------------------------------------------------------------
# Build


def build() -> RoadNetwork:
    """The Ordos network from the tables above."""
    places = {p.id: p for p in NODES}
    edges: list[Edge] = []
    rsus: list[RoadsideUnit] = []
    for road in ROADS:
        carry_m = RSU_FIRST_M  # distance to the next RSU along the road
        n_rsu = 0
        for k, (ia, ib) in enumerate(itertools.pairwise(road.chain)):
            a, b = places[ia], places[ib]
            detour = road.per_link(road.detour, k)
            geom = _bent_polyline((a.lon, a.lat), (b.lon, b.lat), detour, edge_id(ia, ib))
            fwd_s = _stations(geom)
            z = _profile(fwd_s, a.elevation_m, b.elevation_m, road.per_link(road.relief_m, k))
            fwd = _edge(road, a, b, geom, z)
            edges += [fwd, _edge(road, b, a, geom[::-1], z[::-1])]
            while road.rsus and carry_m <= fwd.length_m:
                lon, lat = _point_at(fwd, carry_m)
                n_rsu += 1
                rid = f"rsu-{road.name.lower()}-{n_rsu:02d}"
                rsus.append(RoadsideUnit(rid, fwd.id, round(carry_m, 2), lon, lat, RSU_RADIUS_M))
                carry_m += RSU_SPACING_M
            carry_m -= fwd.length_m

    degree: dict[str, int] = dict.fromkeys(places, 0)
    for e in edges:
        degree[e.from_node] += 1
    nodes = []
    for p in NODES:
        junction, signal = JunctionType.PRIORITY, None
        if p.id == SIGNALISED:
            junction, signal = JunctionType.TRAFFIC_SIGNAL, SIGNAL_PLAN
        elif p.id == ROUNDABOUT:
            junction = JunctionType.ROUNDABOUT
        elif degree[p.id] == 1 and p.id.startswith("s-"):
            junction = JunctionType.DEAD_END
        nodes.append(Node(p.id, p.lon, p.lat, float(p.elevation_m), junction, signal))

    sites = [
        Site(
            r.id, r.kind, r.name_en, r.name_zh, r.node, r.lon, r.lat, r.capacity, r.source,
            r.confidence,
        )
        for r in SITES
    ]  # fmt: skip
    return RoadNetwork.build(nodes, edges, sites, name="ordos", rsus=rsus)


def route_m(net: RoadNetwork, a: str, b: str) -> float:
    """Shortest road distance from node ``a`` to node ``b`` [m] (Dijkstra)."""
    out: dict[str, list[Edge]] = {}
    for e in net.edges.values():
        out.setdefault(e.from_node, []).append(e)
    best = {a: 0.0}
    heap = [(0.0, a)]
    while heap:
        d, n = heapq.heappop(heap)
        if n == b:
            return d
        if d > best.get(n, math.inf):
            continue
        for e in out.get(n, []):
            nd = d + e.length_m
            if nd < best.get(e.to_node, math.inf):
                best[e.to_node] = nd
                heapq.heappush(heap, (nd, e.to_node))
    return math.inf


# --------------------------------------------------------------------------------------------
# Notes

NOTES_HEAD = """\
# The built-in Ordos network: how it was made

*Generated by `make_ordos.py` beside this file (`python -m convoy.road.data.make_ordos`);
edit the tables there, not this file or `ordos.geojson`.*

`ordos.geojson` is convoy's default world: a road network of the coal-freight region of
Ordos (鄂尔多斯), Inner Mongolia, with Baotou across the Yellow River. It is a GeoJSON
FeatureCollection (RFC 7946, WGS84 lon/lat) of nodes, edges (one per direction), sites and
roadside units; `convoy.road.geojson` reads and writes it, and `convoy.road.ordos.ordos_network()`
loads it.

## Method

- **Places are real.** Towns, mines, plants, parks, stations and hubs come from the project's
  fact sheet `ordos-sites.md`, which cites a public source for each. Every site keeps that
  source and its confidence code: **[V]** read in the source, **[S]** secondhand (a page
  quoting another source, or an approximate location), **[S-est]** an estimate, to roughly
  ±0.1° where it is a coordinate. Placeholders (two swap stations, two platoon hubs) say so.
- **Road geometry is schematic.** The corridors follow the real roads' order of towns
  (G65 Baotou–Dongsheng–Kangbashi–Ulan Mulun, G18 Xuejiawan–Dongsheng–Xini–Qipanjing, the
  provincial roads to Wulan, Galutu and Xini, the Yellow River-side road through Dalu and
  Shulinzhao), but not their exact alignment: between two nodes a road leaves the great
  circle in smooth bends (three sine harmonics, fixed per link by a seeded generator), with
  the amplitude solved so that the polyline is a chosen *detour factor* (1.10–1.32) times
  the great-circle distance. Edge length is always the computed polyline length. The
  factors put town-to-town routes near the reference distances below.
- **Elevations.** Node elevations are sourced where a source was found (Dongsheng, Kangbashi,
  Wulan, Xini, Galutu, Shulinzhao, Baotou); the others are estimates for the Ordos plateau
  (≈1,150–1,450 m) and the Yellow River plain (≈1,000 m). Along an edge the profile
  interpolates the end elevations plus an illustrative relief term that is zero at both ends;
  grades follow from the profile. The range of the whole region (about 850–2,150 m, up to
  Zhuozi Shan in the west) is wider than the roads modelled here reach.
- **Roadside units** stand every 8 km along G65 and G18 on the edges of the listed direction
  (radius 500 m, which covers both carriageways).
- **Junction control is illustrative**: a fixed-time signal at Dongsheng (45 s G65, 40 s G18,
  5 s all-red each), a roundabout at Wulan, dead ends at site gates, priority elsewhere.
- **Limits**: expressways 100 km/h for goods vehicles (Regulations for the Implementation of
  the Road Traffic Safety Law, art. 78); other roads carry typical posted limits (estimates).
  Public roads carry the 49 t gross limit of a 6-axle combination (GB 1589-2016); site access
  roads have none.

## Sources beyond `ordos-sites.md`

- Dianshigou No. 1 and No. 2 charging and swap stations (SPIC Qiyuan, CNPC; southern Dalad):
  China Daily, 2022-12-02, http://regional.chinadaily.com.cn/ordosen/en/2022-12/02/c_879849.htm
  (also cited in `costs.md`) [V].
- Xuejiawan–Dongsheng 135 km: "准格尔旗自然概况", a user-uploaded copy of a Jungar Banner
  gazetteer text, http://wtabcd.cn/fanwen/fan/90/49743.html [S].
- G18 (Dongsheng–Chagannaoer section), G109 and S215 pass through Hanggin Banner:
  http://www.zwbk2009.com/index.php?title=%E6%9D%AD%E9%94%A6%E6%97%97 [V].
- Bo'erjianghaizi, 50 km west of Dongsheng on G109, lies at 1,371–1,615 m:
  https://m.iichajd.com/dm_72987/ [V]; used to bound the elevations west of Dongsheng.

## Known gaps and flags

- DESIGN.md names "the 2×1000 MW plant at Jungar's Dalu industrial park"; the sources found
  only a *cancelled* 600 MW Dalu power station. Dalu is modelled as an industrial (coal-chemical,
  coal-power-aluminium) park without a capacity.
- G65 Baotou–Dongsheng was approved for widening to 8 lanes in 2016; whether it is finished
  was not found, so it is modelled at 2 lanes per direction.
- Coordinates of Shulinzhao, Qipanjing, Bulianta, Buertai, the Dalad power plant, the Otog
  EDZ, the KargoBot centre and the Dianshigou stations are estimates; Heidaigou's may be ~5 km off.
- G109 and G210 run beside G18 and G65 and are not modelled separately.
- Galutu's sourced elevation (1,299 m) equals Dongsheng's and may be a template copy.
"""


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def notes(net: RoadNetwork) -> str:
    """ORDOS_NOTES.md: the method, then tables of distances, sites, nodes and roads."""
    lines = [NOTES_HEAD]

    lines += [
        "## Road distances: reference and network",
        "",
        "Shortest routes over all edges, against `convoy.road.ordos.TOWN_DISTANCES_KM`; "
        f"the tests require every one within {DISTANCE_TOLERANCE:.0%}.",
        "",
        "| from | to | reference km | range | network km | diff | conf | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (a, b), ref in TOWN_DISTANCES_KM.items():
        d = route_m(net, net.sites[a].node, net.sites[b].node) / 1000
        rng = f"{ref.low_km:g}–{ref.high_km:g}" if ref.low_km != ref.high_km else "–"
        lines.append(
            f"| {a} | {b} | {ref.km:g} | {rng} | {d:.1f} | {d / ref.km - 1:+.1%} | "
            f"{ref.confidence} | {_md_escape(ref.source)} |"
        )

    lines += [
        "",
        "## Sites",
        "",
        "Capacity: Mt/yr for coal mines, MW for power plants, charging posts for charging "
        "stations.",
        "",
        "| id | kind | English | 中文 | lat | lon | capacity | conf | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in net.sites.values():
        cap = "" if s.capacity is None else f"{s.capacity:g}"
        lines.append(
            f"| {s.id} | {s.kind.value} | {s.name_en} | {s.name_zh} | {s.lat} | {s.lon} | "
            f"{cap} | {s.confidence} | {_md_escape(s.source)} |"
        )

    lines += [
        "",
        "## Nodes",
        "",
        "| id | lat | lon | elevation m | junction | where the numbers come from |",
        "|---|---|---|---|---|---|",
    ]
    places = {p.id: p for p in NODES}
    for n in net.nodes.values():
        lines.append(
            f"| {n.id} | {n.lat} | {n.lon} | {n.elevation_m:g} | {n.junction.value} | "
            f"{_md_escape(places[n.id].note)} |"
        )

    lines += [
        "",
        "## Roads",
        "",
        "| road | class | lanes/dir | km/h | links | detour | one-way km | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for road in ROADS:
        links = list(itertools.pairwise(road.chain))
        km = sum(net.edges[edge_id(a, b)].length_m for a, b in links) / 1000
        det = (
            road.detour
            if isinstance(road.detour, float)
            else "–".join(f"{x:g}" for x in sorted({min(road.detour), max(road.detour)}))
        )
        chain = " → ".join(road.chain)
        lines.append(
            f"| {road.name} | {road.road_class.value} | {road.lanes} | {road.speed_kmh:g} | "
            f"{chain} | {det} | {km:.1f} | {_md_escape(road.note)} |"
        )
    return "\n".join(lines) + "\n"


META = {
    "description": "convoy's built-in Ordos freight network; see ORDOS_NOTES.md",
    "made_by": "convoy/road/data/make_ordos.py",
}


def geojson_text(net: RoadNetwork) -> str:
    """ordos.geojson: the network as GeoJSON with a pointer to the notes."""
    return dumps_geojson(network_to_geojson(net, META))


def main() -> None:
    """Write ``ordos.geojson`` and ``ORDOS_NOTES.md`` beside this file."""
    net = build()
    (HERE / GEOJSON_NAME).write_text(geojson_text(net), encoding="utf-8")
    (HERE / NOTES_NAME).write_text(notes(net), encoding="utf-8")
    print(f"wrote {HERE / GEOJSON_NAME} and {HERE / NOTES_NAME}")


if __name__ == "__main__":
    main()
