//! Scale-out by town (docs/design.md#scale-out-by-town): `stockpile serve --shard i/N`
//! runs instance `i` of `N`, which subscribes to, keeps the ledger of, and alerts for
//! only the towns assigned to it. Towns are the unit because everything Stockpile
//! computes (coverage, status, alerts) is per town; a cluster may span shards.
//!
//! The assignment must be the same on every machine, for every build, forever (or at
//! least until the operator changes `N`): two instances that disagree would each drop a
//! town, or both keep it. So the hash is written out here (FNV-1a 64 with a final mix)
//! rather than taken from std, whose `DefaultHasher` may change between Rust releases.

use std::fmt;
use std::str::FromStr;

use crate::id::TownId;
use crate::registry::{
    ClusterIdx, Contact, ContactScope, DistrictIdx, Facility, FacilityIdx, Registry, RegistryParts,
    TargetOverride, Town, TownIdx,
};

/// One instance's part of the towns: those whose [`town_shard`] is `index`, of `count`
/// instances. Parsed from `"i/N"`, numbered from 0 like the instances of a systemd
/// template (`stockpile@0` … `stockpile@3` for `N = 4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0:?}: expected i/N such as \"0/4\" (instance i of N, numbered from 0)")]
    Shape(String),
    #[error("shard {value:?}: {part:?} is not a number")]
    NotANumber { value: String, part: String },
    #[error("shard {0:?}: the number of shards must be at least 1")]
    NoShards(String),
    #[error(
        "shard {value:?}: index {index} is out of range for {count} shards (numbered 0 to {last})"
    )]
    OutOfRange {
        value: String,
        index: u32,
        count: u32,
        last: u32,
    },
}

impl Shard {
    /// Every town: the single instance of an unsharded deployment.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`; `count ≥ 1` and `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        let value = format!("{index}/{count}");
        if count == 0 {
            return Err(ShardError::NoShards(value));
        }
        if index >= count {
            return Err(ShardError::OutOfRange {
                value,
                index,
                count,
                last: count - 1,
            });
        }
        Ok(Shard { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether the town is this shard's. Takes a `&TownId` or a `&str`.
    pub fn contains(self, town: impl AsRef<str>) -> bool {
        town_shard(town.as_ref(), self.count) == self.index
    }

    /// Whether this shard holds every town (`0/1`).
    pub fn is_whole(self) -> bool {
        self.count == 1
    }

    /// The registry this shard runs with: see [`Registry::only_towns`].
    pub fn registry(self, registry: &Registry) -> Registry {
        registry.only_towns(|town| self.contains(town))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `"i/N"`, as a config file writes it.
impl<'de> serde::Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shard, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let value = s.trim();
        let Some((index, count)) = value.split_once('/').filter(|(_, n)| !n.contains('/')) else {
            return Err(ShardError::Shape(s.to_owned()));
        };
        let number = |part: &str| {
            // `+1` parses as a u32 but is not how anyone writes a shard.
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ShardError::NotANumber {
                    value: s.to_owned(),
                    part: part.to_owned(),
                });
            }
            part.parse::<u32>().map_err(|_| ShardError::NotANumber {
                value: s.to_owned(),
                part: part.to_owned(),
            })
        };
        let (index, count) = (number(index)?, number(count)?);
        Shard::new(index, count).map_err(|e| match e {
            // Name the value as the operator wrote it, not as re-formatted.
            ShardError::NoShards(_) => ShardError::NoShards(s.to_owned()),
            ShardError::OutOfRange {
                index, count, last, ..
            } => ShardError::OutOfRange {
                value: s.to_owned(),
                index,
                count,
                last,
            },
            other => other,
        })
    }
}

/// The shard (`0..count`) a town belongs to when there are `count` shards. Stable: it
/// depends only on the id's bytes, and the tests pin known assignments.
///
/// # Panics
/// When `count` is 0 (a [`Shard`] never has it).
pub fn town_shard(town: &str, count: u32) -> u32 {
    assert!(count > 0, "town_shard: count must be at least 1");
    // FNV-1a's low bits are weak (the lowest is the parity of the odd bytes), and `% N`
    // reads the low bits; MurmurHash3's finaliser spreads every input bit over them.
    let h = fmix64(fnv1a64(town.as_bytes()));
    (h % u64::from(count)) as u32
}

/// FNV-1a, 64 bits (Fowler, Noll, Vo; draft-eastlake-fnv).
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// MurmurHash3's 64-bit finaliser (Appleby): every input bit affects every output bit.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

impl Registry {
    /// The registry reduced to the towns `keep` accepts: those towns (in registry order,
    /// with new dense indices), their facilities, the target overrides that are not
    /// about other towns, and the contacts that concern what is left.
    ///
    /// - Clusters and districts without a kept town are dropped, so a shard's API and
    ///   board list only the clusters it has towns in (a cluster split between shards
    ///   appears in each, with that shard's towns) rather than empty ones.
    /// - A town-scoped contact keeps only the kept towns among its towns and is dropped
    ///   when none is left; cluster- and district-scoped contacts likewise; city contacts
    ///   are always kept (they hear about every town, whichever shard it is on).
    /// - Categories, the water category and the default target are unchanged; kept
    ///   warehouses keep their declared `max`.
    pub fn only_towns(&self, keep: impl Fn(&TownId) -> bool) -> Registry {
        let town_map = remap(self.towns.iter().map(|t| keep(&t.id)));
        let kept = |t: TownIdx| town_map[t.index()].is_some();
        let cluster_map = remap((0..self.clusters.len()).map(|c| {
            self.town_indices()
                .any(|t| kept(t) && self.town(t).cluster.index() == c)
        }));
        let district_map = remap((0..self.districts.len()).map(|d| {
            self.town_indices()
                .any(|t| kept(t) && self.town(t).district.index() == d)
        }));
        let new_town = |t: TownIdx| town_map[t.index()].map(TownIdx::from_index);
        let new_cluster = |c: ClusterIdx| cluster_map[c.index()].map(ClusterIdx::from_index);
        let new_district = |d: DistrictIdx| district_map[d.index()].map(DistrictIdx::from_index);

        let towns: Vec<Town> = self
            .town_indices()
            .filter(|&t| kept(t))
            .map(|t| {
                let town = self.town(t);
                Town {
                    cluster: new_cluster(town.cluster).expect("a kept town's cluster is kept"),
                    district: new_district(town.district).expect("a kept town's district is kept"),
                    // Refilled by `Registry::build` with the new facility indices.
                    facilities: Vec::new(),
                    ..town.clone()
                }
            })
            .collect();
        let facilities: Vec<Facility> = self
            .facilities
            .iter()
            .filter_map(|f| new_town(f.town).map(|town| Facility { town, ..f.clone() }))
            .collect();
        let target_overrides: Vec<TargetOverride> = self
            .target_overrides
            .iter()
            .filter_map(|o| match o.town {
                None => Some(o.clone()),
                Some(t) => new_town(t).map(|town| TargetOverride {
                    town: Some(town),
                    ..o.clone()
                }),
            })
            .collect();
        let contacts: Vec<Contact> = self
            .contacts
            .iter()
            .filter_map(|c| {
                let scope = match &c.scope {
                    ContactScope::Towns(ts) => {
                        ContactScope::Towns(ts.iter().filter_map(|&t| new_town(t)).collect())
                    }
                    ContactScope::Clusters(cs) => {
                        ContactScope::Clusters(cs.iter().filter_map(|&k| new_cluster(k)).collect())
                    }
                    ContactScope::Districts(ds) => ContactScope::Districts(
                        ds.iter().filter_map(|&d| new_district(d)).collect(),
                    ),
                    ContactScope::City => ContactScope::City,
                };
                let concerns_us = match &scope {
                    ContactScope::Towns(v) => !v.is_empty(),
                    ContactScope::Clusters(v) => !v.is_empty(),
                    ContactScope::Districts(v) => !v.is_empty(),
                    ContactScope::City => true,
                };
                concerns_us.then(|| Contact { scope, ..c.clone() })
            })
            .collect();

        // Facilities keep their order, so a kept facility's new index is its rank.
        let facility_map = remap(self.facilities.iter().map(|f| kept(f.town)));
        let warehouse_max: Vec<_> = self
            .warehouse_maxima()
            .filter_map(|((f, c), max)| {
                facility_map[f.index()].map(|f| ((FacilityIdx::from_index(f), c), max))
            })
            .collect();

        let keep_at = |map: &[Option<usize>], i: usize| map[i].is_some();
        Registry::build(RegistryParts {
            target: self.target,
            target_overrides,
            categories: self.categories.clone(),
            water_category: self.water_category,
            districts: (0..self.districts.len())
                .filter(|&d| keep_at(&district_map, d))
                .map(|d| self.districts[d].clone())
                .collect(),
            clusters: (0..self.clusters.len())
                .filter(|&c| keep_at(&cluster_map, c))
                .map(|c| self.clusters[c].clone())
                .collect(),
            towns,
            facilities,
            contacts,
        })
        .with_warehouse_max(warehouse_max)
        // Shelters are named by id, so a shard's plans need no remapping.
        .with_warning_plans(self.warning_plans().clone())
        .with_activation_plans(self.activation_plans_kept(&facility_map))
    }
}

/// New dense positions for the items kept: `Some(new index)` per kept item, in order.
fn remap(kept: impl Iterator<Item = bool>) -> Vec<Option<usize>> {
    let mut next = 0;
    kept.map(|k| {
        k.then(|| {
            next += 1;
            next - 1
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Source, load_registry};

    #[test]
    fn shards_parse_from_i_of_n() {
        for (text, index, count) in [
            ("0/1", 0, 1),
            ("2/4", 2, 4),
            (" 7/8 ", 7, 8),
            ("0/16", 0, 16),
        ] {
            let shard: Shard = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((shard.index(), shard.count()), (index, count), "{text}");
            assert_eq!(shard.to_string(), text.trim());
        }
    }

    #[test]
    fn bad_shards_say_what_is_wrong_and_name_the_value() {
        for (text, want) in [
            (
                "3/2",
                "shard \"3/2\": index 3 is out of range for 2 shards (numbered 0 to 1)",
            ),
            (
                "4/4",
                "shard \"4/4\": index 4 is out of range for 4 shards (numbered 0 to 3)",
            ),
            (
                "0/0",
                "shard \"0/0\": the number of shards must be at least 1",
            ),
            ("a/2", "shard \"a/2\": \"a\" is not a number"),
            ("1/", "shard \"1/\": \"\" is not a number"),
            ("-1/2", "shard \"-1/2\": \"-1\" is not a number"),
            (
                "1/2/3",
                "shard \"1/2/3\": expected i/N such as \"0/4\" (instance i of N, numbered from 0)",
            ),
            (
                "99999999999/2",
                "shard \"99999999999/2\": \"99999999999\" is not a number",
            ),
            (
                "2",
                "shard \"2\": expected i/N such as \"0/4\" (instance i of N, numbered from 0)",
            ),
            (
                "",
                "shard \"\": expected i/N such as \"0/4\" (instance i of N, numbered from 0)",
            ),
        ] {
            let got = text.parse::<Shard>().map(|s| s.to_string());
            assert_eq!(
                got.map_err(|e| e.to_string()),
                Err(want.to_owned()),
                "{text}"
            );
        }
        assert!(Shard::new(2, 2).is_err());
        assert!(Shard::new(0, 0).is_err());
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Pinned: a change here moves towns between running instances, whose ledgers and
    /// alert state stay behind. Change the hash only with a migration plan.
    #[test]
    fn assignment_is_stable() {
        for (town, want) in [
            ("jingshan", [0, 0, 1, 2, 2]),
            ("donghua", [0, 0, 2, 2, 6]),
            ("jinrong", [0, 0, 0, 0, 4]),
            ("jianwai", [0, 1, 2, 1, 1]),
            ("beixinqiao", [0, 1, 2, 3, 7]),
            ("jiaodaokou", [0, 1, 0, 1, 5]),
            ("niujie", [0, 0, 1, 0, 0]),
            ("andingmen", [0, 0, 0, 0, 0]),
        ] {
            let got = [1, 2, 3, 4, 8].map(|n| town_shard(town, n));
            assert_eq!(got, want, "{town} for N = 1, 2, 3, 4, 8");
        }
    }

    fn town_ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("town-{i:04}")).collect()
    }

    #[test]
    fn every_town_is_in_exactly_one_shard() {
        let ids = town_ids(500);
        for count in 1..=8 {
            for id in &ids {
                let owners: Vec<u32> = (0..count)
                    .filter(|&i| Shard::new(i, count).unwrap().contains(id))
                    .collect();
                assert_eq!(owners, [town_shard(id, count)], "{id} of {count} shards");
            }
        }
    }

    #[test]
    fn towns_spread_evenly_over_shards() {
        let ids = town_ids(10_000);
        for count in 1..=8u32 {
            let mut sizes = vec![0usize; count as usize];
            for id in &ids {
                sizes[town_shard(id, count) as usize] += 1;
            }
            let mean = ids.len() / count as usize;
            for (i, &size) in sizes.iter().enumerate() {
                assert!(
                    size.abs_diff(mean) * 10 <= mean,
                    "shard {i}/{count} has {size} towns, mean {mean}: {sizes:?}"
                );
            }
        }
    }

    const REGISTRY: &str = r#"
[[target.override]]
town = "a1"
days = 4.0
[[target.override]]
town = "b1"
days = 5.0
[[target.override]]
category = "water"
warn_days = 4.0

[[district]]
id = "east"
name = "East"
[[district]]
id = "west"
name = "West"
[[cluster]]
id = "ca"
name = "Cluster A"
[[cluster]]
id = "cb"
name = "Cluster B"
[[cluster]]
id = "cc"
name = "Cluster C"

[[category]]
id = "water"
name = "Water"
unit = "L"
daily_need = 3.0

[[town]]
id = "a1"
name = "A1"
district = "east"
cluster = "ca"
population = 100
[[town]]
id = "b1"
name = "B1"
district = "west"
cluster = "cb"
population = 200
[[town]]
id = "a2"
name = "A2"
district = "east"
cluster = "ca"
population = 300
[[town]]
id = "c1"
name = "C1"
district = "west"
cluster = "cc"
population = 400

[[facility]]
id = "a1-wh"
town = "a1"
kind = "warehouse"
[[facility]]
id = "b1-wh"
town = "b1"
kind = "warehouse"
max = { water = 7000 }
[[facility]]
id = "a2-wh"
town = "a2"
kind = "warehouse"
report_every = "10s"
max = { water = 5000 }
[[facility]]
id = "a1-wp"
town = "a1"
kind = "water_point"

[[contact]]
name = "A1 and B1 officer"
email = "ab@example.org"
towns = ["a1", "b1"]
[[contact]]
name = "B1 officer"
email = "b@example.org"
towns = ["b1"]
[[contact]]
name = "Cluster B duty"
email = "cb@example.org"
clusters = ["cb"]
[[contact]]
name = "West duty"
email = "w@example.org"
districts = ["west"]
[[contact]]
name = "City duty"
email = "city@example.org"
city = true
"#;

    fn registry() -> Registry {
        let source = Source {
            name: "registry.toml".into(),
            text: REGISTRY.into(),
        };
        load_registry(&source, &[], &mut |_| Err("no files".into()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn ids<T>(items: &[T], id: impl Fn(&T) -> String) -> Vec<String> {
        items.iter().map(id).collect()
    }

    #[test]
    fn only_towns_keeps_those_towns_with_their_facilities_and_contacts() {
        let whole = registry();
        let part = whole.only_towns(|t| t.as_str().starts_with('a'));

        assert_eq!(ids(&part.towns, |t| t.id.to_string()), ["a1", "a2"]);
        assert_eq!(
            ids(&part.facilities, |f| format!(
                "{}@{}",
                f.id,
                part.town(f.town).id
            )),
            ["a1-wh@a1", "a2-wh@a2", "a1-wp@a1"]
        );
        let a1 = part.town_idx("a1").unwrap();
        let facilities_of_a1: Vec<String> = part
            .town(a1)
            .facilities
            .iter()
            .map(|&f| part.facility(f).id.to_string())
            .collect();
        assert_eq!(facilities_of_a1, ["a1-wh", "a1-wp"]);
        assert!(part.town_idx("b1").is_none());
        assert!(part.facility_idx("b1-wh").is_none());
        assert_eq!(ids(&part.clusters, |c| c.id.to_string()), ["ca"]);
        assert_eq!(ids(&part.districts, |d| d.id.to_string()), ["east"]);
        assert_eq!(
            ids(&part.contacts, |c| c.name.clone()),
            ["A1 and B1 officer", "City duty"]
        );
        assert_eq!(part.contacts[0].scope, ContactScope::Towns(vec![a1]));

        // Targets resolve as in the whole registry: a1's override moved with it, b1's is gone.
        let water = part.category_idx("water").unwrap();
        let whole_a1 = whole.town_idx("a1").unwrap();
        assert_eq!(part.target_for(a1, water).days, 4.0);
        assert_eq!(
            part.target_for(a1, water),
            whole.target_for(whole_a1, water)
        );
        assert_eq!(part.town_target(a1), whole.town_target(whole_a1));
        assert_eq!(part.target_overrides.len(), 2);
        let a2 = part.facility_idx("a2-wh").unwrap();
        assert_eq!(
            part.facility(a2).stale_after,
            whole
                .facility(whole.facility_idx("a2-wh").unwrap())
                .stale_after
        );
        // a2-wh moved from index 2 to 1; its declared max moved with it, b1-wh's is gone.
        assert_eq!(
            part.warehouse_maxima().collect::<Vec<_>>(),
            [((a2, water), 5000.0)]
        );
    }

    #[test]
    fn only_towns_remaps_cluster_and_district_contacts() {
        let part = registry().only_towns(|t| t.as_str() == "c1");
        assert_eq!(ids(&part.towns, |t| t.id.to_string()), ["c1"]);
        assert!(part.facilities.is_empty());
        assert_eq!(ids(&part.clusters, |c| c.id.to_string()), ["cc"]);
        assert_eq!(ids(&part.districts, |d| d.id.to_string()), ["west"]);
        let c1 = part.town(part.town_idx("c1").unwrap());
        assert_eq!(part.clusters[c1.cluster.index()].id.as_str(), "cc");
        assert_eq!(part.districts[c1.district.index()].id.as_str(), "west");
        // Cluster B's duty officer has nothing here; the West district's does.
        assert_eq!(
            ids(&part.contacts, |c| c.name.clone()),
            ["West duty", "City duty"]
        );
        assert_eq!(
            part.contacts[0].scope,
            ContactScope::Districts(vec![DistrictIdx(0)])
        );
    }

    #[test]
    fn whole_shard_and_all_shards_together_give_back_the_registry() {
        let whole = registry();
        let same = Shard::WHOLE.registry(&whole);
        assert_eq!(same.towns, whole.towns);
        assert_eq!(same.facilities, whole.facilities);
        assert_eq!(same.contacts, whole.contacts);
        assert_eq!(same.target_overrides, whole.target_overrides);

        for count in 1..=4 {
            let mut towns: Vec<String> = (0..count)
                .flat_map(|i| {
                    let part = Shard::new(i, count).unwrap().registry(&whole);
                    ids(&part.towns, |t| t.id.to_string())
                })
                .collect();
            towns.sort();
            assert_eq!(towns, ["a1", "a2", "b1", "c1"], "{count} shards");
        }
    }
}
