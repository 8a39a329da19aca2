#!/usr/bin/env python3
"""Writes the SYNTHETIC Beijing-like demo registry into this directory.

District names are real; towns, populations, coordinates, facilities and contacts are
invented. Output is deterministic (fixed seed, no set/dict iteration order involved), so
the committed files can be checked against the generator:

    python3 demo/generate.py          # (re)write the files
    python3 demo/generate.py --check  # exit 1 if a committed file differs
"""

import csv
import io
import math
import random
import sys
from pathlib import Path

SEED = 20251113  # the date of the bureau's reply in seed/, for want of a better number
HERE = Path(__file__).resolve().parent

# id, name, towns, clusters, population (≈ 2020 census, 10k), centre lat/lon, radius (deg).
# Cluster counts follow population: 39 in all, every district at least one.
DISTRICTS = [
    ("dongcheng", "东城", 17, 2, 70.9, 39.928, 116.416, 0.03),
    ("xicheng", "西城", 15, 2, 110.6, 39.912, 116.366, 0.03),
    ("chaoyang", "朝阳", 43, 5, 345.2, 39.948, 116.486, 0.08),
    ("haidian", "海淀", 29, 5, 313.3, 39.990, 116.270, 0.08),
    ("fengtai", "丰台", 26, 3, 201.9, 39.858, 116.287, 0.07),
    ("shijingshan", "石景山", 9, 1, 56.8, 39.906, 116.195, 0.03),
    ("mentougou", "门头沟", 13, 1, 39.3, 39.990, 115.800, 0.18),
    ("fangshan", "房山", 28, 3, 131.3, 39.735, 115.990, 0.20),
    ("tongzhou", "通州", 22, 3, 184.0, 39.810, 116.730, 0.12),
    ("shunyi", "顺义", 25, 3, 132.4, 40.130, 116.650, 0.12),
    ("changping", "昌平", 22, 3, 226.9, 40.220, 116.230, 0.15),
    ("daxing", "大兴", 22, 3, 199.4, 39.727, 116.341, 0.12),
    ("huairou", "怀柔", 16, 1, 44.1, 40.600, 116.550, 0.20),
    ("pinggu", "平谷", 18, 1, 45.7, 40.140, 117.120, 0.10),
    ("miyun", "密云", 20, 2, 52.8, 40.480, 116.930, 0.20),
    ("yanqing", "延庆", 18, 1, 34.6, 40.460, 115.970, 0.15),
]
INNER = {"dongcheng", "xicheng"}  # the old city: streets only
CORE = {"chaoyang", "haidian", "fengtai", "shijingshan"}
PLAIN = {"fangshan", "tongzhou", "shunyi", "changping", "daxing"}  # the rest: mountains
# Suffix odds (街道, 镇, 乡): the city core is streets, the outskirts towns and townships.
SUFFIX_WEIGHTS = {"inner": (1, 0, 0), "core": (90, 0, 10), "plain": (35, 60, 5), "mountain": (15, 70, 15)}
TOTAL_POPULATION = 21_800_000

# Syllables for invented town names: (character, pinyin), pinyin becomes the slug.
SYLLABLES = [
    ("安", "an"), ("宁", "ning"), ("和", "he"), ("平", "ping"), ("兴", "xing"),
    ("隆", "long"), ("康", "kang"), ("泰", "tai"), ("福", "fu"), ("寿", "shou"),
    ("丰", "feng"), ("盛", "sheng"), ("嘉", "jia"), ("禾", "he"), ("清", "qing"),
    ("河", "he"), ("溪", "xi"), ("泉", "quan"), ("湖", "hu"), ("林", "lin"),
    ("松", "song"), ("柳", "liu"), ("桃", "tao"), ("杏", "xing"), ("梅", "mei"),
    ("兰", "lan"), ("石", "shi"), ("峪", "yu"), ("坡", "po"), ("台", "tai"),
    ("桥", "qiao"), ("营", "ying"), ("庄", "zhuang"), ("店", "dian"), ("屯", "tun"),
    ("堡", "bao"), ("园", "yuan"), ("苑", "yuan"), ("华", "hua"), ("新", "xin"),
    ("东", "dong"), ("西", "xi"), ("南", "nan"), ("北", "bei"), ("景", "jing"),
    ("春", "chun"), ("秋", "qiu"), ("明", "ming"), ("光", "guang"), ("云", "yun"),
    ("霞", "xia"), ("金", "jin"), ("玉", "yu"), ("长", "chang"), ("永", "yong"),
]
SURNAMES = [("李", "Li"), ("王", "Wang"), ("张", "Zhang"), ("刘", "Liu"), ("陈", "Chen"),
            ("杨", "Yang"), ("赵", "Zhao"), ("黄", "Huang"), ("周", "Zhou"), ("吴", "Wu"),
            ("徐", "Xu"), ("孙", "Sun"), ("马", "Ma"), ("朱", "Zhu"), ("胡", "Hu")]
GIVEN = [("伟", "Wei"), ("芳", "Fang"), ("娜", "Na"), ("敏", "Min"), ("静", "Jing"),
         ("磊", "Lei"), ("强", "Qiang"), ("洋", "Yang"), ("艳", "Yan"), ("杰", "Jie"),
         ("勇", "Yong"), ("军", "Jun"), ("涛", "Tao"), ("明", "Ming"), ("超", "Chao"),
         ("秀英", "Xiuying"), ("建华", "Jianhua"), ("海燕", "Haiyan"), ("志强", "Zhiqiang")]
NUMERALS = "一二三四五六七八九"


def tier(district_id):
    if district_id in INNER:
        return "inner"
    return "core" if district_id in CORE else "plain" if district_id in PLAIN else "mountain"


def near(rng, lat, lon, radius):
    """A point uniformly inside a circle of `radius` degrees (of latitude) around lat/lon."""
    r, a = radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    return lat + r * math.sin(a), lon + r * math.cos(a) / math.cos(math.radians(lat))


def make_clusters():
    clusters, n = [], 0
    for did, short, _, count, *_ in DISTRICTS:
        for k in range(count):
            n += 1
            name = f"{short}组团" if count == 1 else f"{short}{NUMERALS[k]}组团"
            clusters.append({"id": f"c{n:02d}", "name": name, "district": did})
    return clusters


def make_towns(rng, clusters):
    towns, used_names, used_ids = [], set(), set()
    scale = TOTAL_POPULATION / (sum(d[4] for d in DISTRICTS) * 10_000)
    for did, _, n_towns, _, pop_10k, lat, lon, radius in DISTRICTS:
        own = []
        for _ in range(n_towns):
            while True:  # draw until both the name and its slug are new
                (c1, p1), (c2, p2) = rng.sample(SYLLABLES, 2)
                suffix = rng.choices(("街道", "镇", "乡"), SUFFIX_WEIGHTS[tier(did)])[0]
                name, tid = c1 + c2 + suffix, f"{did}-{p1}{p2}"
                if name not in used_names and tid not in used_ids:
                    break
            used_names.add(name)
            used_ids.add(tid)
            t_lat, t_lon = near(rng, lat, lon, radius)
            # Townships (乡) are rural and smaller than streets and towns.
            weight = rng.uniform(0.6, 1.4) * (0.5 if suffix == "乡" else 1.0)
            own.append({"id": tid, "name": name, "district": did,
                        "lat": t_lat, "lon": t_lon, "weight": weight})
        total_weight = sum(t["weight"] for t in own)
        for t in own:
            t["population"] = round(pop_10k * 10_000 * scale * t["weight"] / total_weight)
        # Clusters are sectors around the district centre, so neighbours share one.
        own.sort(key=lambda t: math.atan2(t["lat"] - lat, t["lon"] - lon))
        mine = [c for c in clusters if c["district"] == did]
        for i, t in enumerate(own):
            t["cluster"] = mine[i * len(mine) // len(own)]["id"]
            pop = t["population"]
            t["groups"] = {"infants": round(pop * rng.uniform(0.008, 0.012)),
                           "elderly": round(pop * rng.uniform(0.15, 0.25)),
                           "dialysis": round(pop * rng.uniform(0.0003, 0.0007))}
        towns.extend(sorted(own, key=lambda t: (t["cluster"], t["id"])))
    return towns


def make_facilities(rng, towns):
    facilities = []
    for t in towns:
        # Bigger towns hold more sites; every town has at least one of each kind.
        size = t["population"] / 60_000
        counts = {"warehouse": (min(3, max(1, round(size + rng.random()))), "wh"),
                  "water_point": (min(4, max(1, round(size + rng.uniform(0, 2)))), "wp"),
                  "power_unit": (min(3, max(1, round(size + rng.random() - 0.3))), "pu")}
        for kind in ("warehouse", "water_point", "power_unit"):
            count, tag = counts[kind]
            for n in range(1, count + 1):
                lat, lon = near(rng, t["lat"], t["lon"], 0.01)
                label = {"warehouse": "应急物资仓库", "water_point": "应急供水点",
                         "power_unit": "应急发电机组"}[kind]
                f = {"id": f"{t['id']}-{tag}{n}", "town": t["id"], "kind": kind,
                     "name": f"{t['name']}{label}{n}", "lat": f"{lat:.5f}",
                     "lon": f"{lon:.5f}", "report_every": rng.choices(("60s", "300s"), (9, 1))[0],
                     "capacity_l": "", "fuel_capacity_l": "", "burn_l_per_h": "",
                     "min_battery_pct": ""}
                if kind == "water_point":
                    f["capacity_l"] = 5000 * rng.randint(4, 40)  # 20 000 – 200 000 L
                elif kind == "power_unit":
                    fuel = 50 * rng.randint(4, 40)  # 200 – 2000 L
                    # A full tank runs 3.5–6 days at rated burn: above the 3-day target
                    # with a margin, so only consumption or a fault makes it not ready.
                    runtime_h = rng.uniform(84, 144)
                    f["fuel_capacity_l"] = fuel
                    f["burn_l_per_h"] = f"{max(2.0, round(fuel / runtime_h, 1)):.1f}"
                    f["min_battery_pct"] = 50
                facilities.append(f)
    return facilities


# Shelters (平急两用, docs/design.md#shelters): the first two towns of every cluster have
# a school, gym, hotel or community centre that converts to a shelter. Drawn from their
# own generator so that adding them left every other facility as it was.
SHELTER_USES = {"school": "学校", "gym": "体育馆", "hotel": "酒店", "community_centre": "社区中心"}


def make_shelters(towns):
    rng = random.Random(SEED + 16)
    shelters, per_cluster = [], {}
    for t in towns:
        per_cluster[t["cluster"]] = per_cluster.get(t["cluster"], 0) + 1
        if per_cluster[t["cluster"]] > 2:
            continue
        use = rng.choice(sorted(SHELTER_USES))
        lat, lon = near(rng, t["lat"], t["lon"], 0.01)
        # Room for 1–3 % of the residents, in fifties: a school hall to a stadium.
        capacity = max(100, 50 * round(t["population"] * rng.uniform(0.01, 0.03) / 50))
        shelters.append({"id": f"{t['id']}-sh1", "town": t["id"], "kind": "shelter",
                         "name": f"{t['name']}{SHELTER_USES[use]}避难场所", "lat": f"{lat:.5f}",
                         "lon": f"{lon:.5f}", "report_every": "60s", "capacity": capacity,
                         "dual_use": use, "convert_within": rng.choice(("2h", "4h"))})
    return shelters


def make_contacts(rng, towns, clusters):
    contacts, emails = [], set()

    def person(**scope):
        (s_zh, s_py), (g_zh, g_py) = rng.choice(SURNAMES), rng.choice(GIVEN)
        lang = rng.choices(("zh", "en"), (9, 1))[0]
        base, k = f"{g_py.lower()}.{s_py.lower()}", 1
        while f"{base}{k if k > 1 else ''}@example.org" in emails:
            k += 1
        email = f"{base}{k if k > 1 else ''}@example.org"
        emails.add(email)
        contacts.append({
            "name": s_zh + g_zh if lang == "zh" else f"{g_py} {s_py}",
            "email": email, "phone": f"+86138{len(contacts) + 1:08d}", "lang": lang,
            "towns": "", "clusters": "", "districts": "", "city": "",
            # Empty: every channel the contact has an address for.
            "channels": rng.choices(("", "email;sms", "sms", "email"), (12, 5, 2, 1))[0],
            **scope})

    has_deputy = False
    for i, t in enumerate(towns):
        person(towns=t["id"])
        # Now and then a deputy covers this town and the next one of the same cluster;
        # no town gets two deputies.
        nxt = towns[i + 1] if i + 1 < len(towns) else None
        if not has_deputy and nxt and nxt["cluster"] == t["cluster"] and rng.random() < 0.4:
            person(towns=f"{t['id']};{nxt['id']}")
            has_deputy = True
        else:
            has_deputy = False
    for c in clusters:
        person(clusters=c["id"])
    for d in DISTRICTS:
        person(districts=d[0])
    for _ in range(2):
        person(city="true")
    return contacts


# Communities (村社) with their ledgers of vulnerable people are listed for one district
# only, inline in registry.toml: enough for the demo to name villages in its API answers
# and alert emails without a fourth CSV file every copy of the demo must carry.
COMMUNITY_DISTRICT = "dongcheng"
COMMUNITY_NAMES = ["胡同", "东里", "西里", "南街", "北街", "新村", "花园", "大院"]


def split(rng, total, parts):
    """`total` split into `parts` whole numbers summing to it exactly."""
    weights = [rng.uniform(0.5, 1.5) for _ in range(parts)]
    shares = [int(total * w / sum(weights)) for w in weights]
    shares[-1] += total - sum(shares)
    return shares


def make_communities(towns, facilities):
    """3–5 communities per town of COMMUNITY_DISTRICT. The town's groups are split among
    them exactly (towns.csv keeps its figures as control totals); each also counts its
    disabled and oxygen-dependent people, groups only communities give. A community
    drinks from one of its town's water points and hangs on one of its power units."""
    # Its own generator: adding communities leaves every other file as it was.
    rng = random.Random(f"{SEED}-communities")
    communities = []
    for t in (t for t in towns if t["district"] == COMMUNITY_DISTRICT):
        n = rng.randint(3, 5)
        shares = {g: split(rng, count, n) for g, count in t["groups"].items()}
        people = split(rng, t["population"], n)
        names = rng.sample(COMMUNITY_NAMES, n)
        own = [f for f in facilities if f["town"] == t["id"]]
        water = [f["id"] for f in own if f["kind"] == "water_point"]
        power = [f["id"] for f in own if f["kind"] == "power_unit"]
        for i in range(n):
            groups = {g: shares[g][i] for g in t["groups"]}
            groups["disabled"] = round(people[i] * rng.uniform(0.004, 0.008))
            groups["oxygen"] = round(people[i] * rng.uniform(0.0001, 0.0003))
            communities.append({"id": f"{t['id']}-c{i + 1}", "town": t["id"],
                                "name": t["name"].removesuffix("街道").removesuffix("镇")
                                + names[i] + "社区",
                                "groups": groups, "water_point": rng.choice(water),
                                "power_unit": rng.choice(power)})
    return communities


def communities_toml(communities):
    out = ["",
           "# Communities (村社) of the " + COMMUNITY_DISTRICT + " district: vulnerable people by",
           "# group (counts, no persons) and the water point and power unit serving each.",
           "# Their sums are the towns' groups; disabled and oxygen are counted only here."]
    for c in communities:
        groups = ", ".join(f"{g} = {n}" for g, n in c["groups"].items())
        out += ["", "[[community]]", f"id = {toml_str(c['id'])}", f"town = {toml_str(c['town'])}",
                f"name = {toml_str(c['name'])}", f"groups = {{ {groups} }}",
                f"water_point = {toml_str(c['water_point'])}",
                f"power_unit = {toml_str(c['power_unit'])}"]
    return "\n".join(out) + "\n"


# The activation table (一表, docs/design.md#activation-table): one plan per shelter type,
# its steps due well within the shortest conversion time (2h), each done by an officer of
# a town that has such a shelter (named by email: the demo's names repeat).
ACTIVATION_STEPS = {
    "school": [("通知校方 Notify the school", "15m"),
               ("疏散学生、清空教室 Send pupils home, clear the classrooms", "45m"),
               ("搬入床铺与饮用水 Bring in beds and drinking water", "1h20m"),
               ("设立登记台 Set up the check-in desk", "1h40m"),
               ("开门接收 Open the doors", "2h")],
    "gym": [("通知场馆运营方 Notify the venue operator", "15m"),
            ("清场并铺设地垫 Clear the floor, lay mats", "1h"),
            ("搬入床铺与饮用水 Bring in beds and drinking water", "1h30m"),
            ("开门接收 Open the doors", "2h")],
    "hotel": [("通知酒店 Notify the hotel", "15m"),
              ("腾空客房 Free the rooms", "1h"),
              ("设立登记台 Set up the check-in desk", "1h30m"),
              ("开门接收 Open the doors", "2h")],
    "community_centre": [("通知社区 Notify the community", "15m"),
                         ("清空活动室 Clear the activity rooms", "40m"),
                         ("搬入床铺与饮用水 Bring in beds and drinking water", "1h10m"),
                         ("设立登记台 Set up the check-in desk", "1h30m"),
                         ("开门接收 Open the doors", "2h")],
}


def activation_plans_toml(shelters, contacts):
    out = ["",
           "# The activation table (一表): the steps that turn each type of shelter from",
           "# everyday use into a shelter, who does each and within how long of the start."]
    for use, steps in ACTIVATION_STEPS.items():
        towns = [s["town"] for s in shelters if s["dual_use"] == use]
        officers = [c["email"] for t in towns for c in contacts if c["towns"] == t]
        out += ["", "[[activation_plan]]", f"dual_use = {toml_str(use)}"]
        for i, (name, within) in enumerate(steps):
            out += ["[[activation_plan.step]]", f"name = {toml_str(name)}",
                    f"contact = {toml_str(officers[i % len(officers)])}",
                    f"within = {toml_str(within)}"]
    return "\n".join(out) + "\n"


WARNING_LEVELS_TOML = """
# Warning levels (预警等级): what each level an admin sets over a part of the city
# (POST /api/v1/warning-level) changes for the towns under it. Blue and yellow change
# only what the board and the messages say.
[warning_levels.orange]
days_target = 4.0               # hold four days instead of three
group_wait = "5s"               # tell officers sooner
escalate_after = "20m"

[warning_levels.red]
days_target = 5.0               # five days, as the plans for a red rainstorm warning ask
group_wait = "2s"
escalate_after = "10m"
pre_activate = ["school", "gym"] # start converting the scope's schools and gyms at once
"""


def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def registry_toml(clusters):
    out = [
        "# SYNTHETIC demo registry, generated by demo/generate.py: NOT real data.",
        "# District names are real Beijing districts; towns, populations, coordinates,",
        "# facilities and contacts are invented (district totals loosely follow the 2020",
        "# census, scaled to 21.8 million). Edit the generator, not this file.",
        "",
        "water_category = \"water\"",
        "",
        "[target]",
        "days = 3.0       # the bureau's three days of supplies per town",
        "warn_days = 3.5  # warn half a day before the target is crossed",
        "hysteresis = 0.1 # days above a threshold before a level clears (no flapping)",
        "# stale_after: not set, so 3 × each facility's report_every",
        "",
        "[csv]",
        'towns = "towns.csv"',
        'facilities = "facilities.csv"',
        'contacts = "contacts.csv"',
        "",
    ]
    for did, short, *_ in DISTRICTS:
        out += ["[[district]]", f"id = {toml_str(did)}", f"name = {toml_str(short + '区')}", ""]
    for c in clusters:
        out += [f"[[cluster]]  # {c['district']}", f"id = {toml_str(c['id'])}",
                f"name = {toml_str(c['name'])}", ""]
    out += [
        "# Daily needs per person (of `group`, default everyone) per day. `name_zh` and",
        "# `name_en` are what boards and messages in that language call the category.",
        "# Survival drinking water (Sphere standard); FEMA's 1 gallon also covers sanitation.",
        '[[category]]\nid = "water"\nname = "Drinking water"\nname_zh = "饮用水"\nname_en = "Drinking water"\nunit = "L"\ndaily_need = 3.0\n',
        "# Three meal-rations a day.",
        '[[category]]\nid = "food"\nname = "Food"\nname_zh = "食品"\nname_en = "Food"\nunit = "ration"\ndaily_need = 3.0\n',
        "# About 150 g of powder a day feeds an infant under one year.",
        '[[category]]\nid = "infant-formula"\nname = "Infant formula"\nname_zh = "婴儿配方奶粉"\nname_en = "Infant formula"\nunit = "kg"\n'
        'daily_need = 0.15\ngroup = "infants"\n',
        "# One first-aid kit per 50 people per day: minor injuries after a disaster use",
        "# up dressings and antiseptics at roughly that rate (a planning figure).",
        '[[category]]\nid = "medical-kit"\nname = "Medical kits"\nname_zh = "急救包"\nname_en = "Medical kits"\nunit = "kit"\n'
        "daily_need = 0.02\n",
        "# One blanket per person, counted over three days (0.34 × 3 ≈ 1).",
        '[[category]]\nid = "blanket"\nname = "Blankets"\nname_zh = "棉被"\nname_en = "Blankets"\nunit = "pcs"\ndaily_need = 0.34',
    ]
    return "\n".join(out) + "\n"


STOCKPILE_TOML = """\
# Demo configuration: embedded broker, SQLite in stockpile-demo.db, API on 127.0.0.1:8080.
# Uses the SYNTHETIC registry next to this file (see README.md).
registry = "registry.toml"

[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "stockpile-demo"
embedded_broker = true

[store]
path = "stockpile-demo.db"

[api]
listen = "127.0.0.1:8080"
public_read = true

[alerts]
group_wait = "10s"
repeat_every = "4h"
escalate_after = "30m"
"""


def to_csv(columns, rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def generate():
    rng = random.Random(SEED)
    clusters = make_clusters()
    towns = make_towns(rng, clusters)
    facilities = make_facilities(rng, towns)
    contacts = make_contacts(rng, towns, clusters)
    shelters = make_shelters(towns)
    facilities += shelters
    communities = make_communities(towns, facilities)
    check_invariants(clusters, towns, facilities)
    town_rows = [dict(t, lat=f"{t['lat']:.5f}", lon=f"{t['lon']:.5f}",
                      groups=";".join(f"{k}={v}" for k, v in t["groups"].items()))
                 for t in towns]
    files = {
        "registry.toml": registry_toml(clusters) + communities_toml(communities)
        + activation_plans_toml(shelters, contacts) + WARNING_LEVELS_TOML,
        "towns.csv": to_csv(["id", "name", "district", "cluster", "population", "lat", "lon",
                             "groups"], town_rows),
        "facilities.csv": to_csv(["id", "town", "kind", "name", "lat", "lon", "report_every",
                                  "capacity_l", "fuel_capacity_l", "burn_l_per_h",
                                  "min_battery_pct", "capacity", "dual_use", "convert_within"],
                                 facilities),
        "contacts.csv": to_csv(["name", "email", "phone", "lang", "towns", "clusters",
                                "districts", "city", "channels"], contacts),
        "stockpile.toml": STOCKPILE_TOML,
    }
    kinds = [f["kind"] for f in facilities]
    summary = (f"{len(towns)} towns in {len(clusters)} clusters, population "
               f"{sum(t['population'] for t in towns):,}; facilities: "
               + ", ".join(f"{kinds.count(k)} {k}" for k in ("warehouse", "water_point",
                                                             "power_unit", "shelter"))
               + f"; {len(contacts)} contacts; {len(communities)} communities")
    return files, summary


def check_invariants(clusters, towns, facilities):
    ids = [d[0] for d in DISTRICTS] + [c["id"] for c in clusters] + \
          [t["id"] for t in towns] + [f["id"] for f in facilities]
    require(len(ids) == len(set(ids)), "ids are not unique")
    require(len(clusters) == 39 and len(towns) == 343, "expected 39 clusters, 343 towns")
    for c in clusters:
        require(sum(t["cluster"] == c["id"] for t in towns) >= 3, f"{c['id']}: < 3 towns")
    total = sum(t["population"] for t in towns)
    require(abs(total - TOTAL_POPULATION) <= TOTAL_POPULATION // 100, f"population {total}")
    for t in towns:
        require(sum(t["groups"].values()) <= t["population"], f"{t['id']}: groups > population")


def require(ok, message):
    if not ok:
        raise SystemExit(f"generate.py: invariant broken: {message}")


def main(argv):
    files, summary = generate()
    if argv[1:] == ["--check"]:
        stale = [n for n, text in files.items()
                 if not (HERE / n).exists() or (HERE / n).read_bytes() != text.encode()]
        for n in stale:
            print(f"demo/{n} differs from what demo/generate.py produces", file=sys.stderr)
        return 1 if stale else 0
    if argv[1:]:
        print("usage: generate.py [--check]", file=sys.stderr)
        return 2
    for name, text in files.items():
        (HERE / name).write_bytes(text.encode())
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
