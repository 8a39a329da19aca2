//! Mutual aid inside a cluster (组团互助): for each town below target in a category,
//! which towns of the same cluster can send how much, nearest first.
//!
//! A plan, not a list of wishes: donors' spare stock is allocated once, so two towns in
//! need are never both promised the same litres. Needs are served most urgent first
//! (fewest days). A donor gives only what it holds above its own `warn_days`, so giving
//! never turns it into a warning town, let alone drops it below target. A town where
//! nobody needs the category (infant formula without infants) can give all it holds.

use reserve::Ledger;
use reserve::registry::TownIdx;
use serde::Serialize;
use utoipa::ToSchema;

/// Mean Earth radius for great-circle distances.
const EARTH_RADIUS_KM: f64 = 6371.0;
/// Amounts below this (in the category's unit) are rounding noise, not transfers.
const NEGLIGIBLE: f64 = 1e-6;

/// A town below target in one category, and what the cluster can send it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AidNeed {
    pub town: String,
    pub town_name: String,
    /// Category id.
    pub category: String,
    /// Unit of every amount in this need.
    pub unit: String,
    pub days: f64,
    pub target_days: f64,
    /// What the town lacks to reach its target.
    pub shortfall: f64,
    /// Suggested transfers, nearest donor first.
    pub transfers: Vec<AidTransfer>,
    /// What the cluster cannot cover; 0 when the transfers close the gap.
    pub unmet: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AidTransfer {
    /// Donor town id.
    pub from: String,
    pub from_name: String,
    pub amount: f64,
    /// Great-circle distance between the towns; `null` when either has no location.
    pub distance_km: Option<f64>,
    /// The donor's days of supply after this and earlier transfers of this plan;
    /// `null` when nobody in the donor town needs the category.
    pub donor_days_after: Option<f64>,
    /// False when the donor's figures are unverified (a facility silent or never
    /// reported): check before sending a truck.
    pub donor_verified: bool,
}

/// One town's holding of one category, what the plan works on.
#[derive(Debug, Clone, PartialEq)]
struct Holding {
    stock: f64,
    need_per_day: f64,
    target_days: f64,
    warn_days: f64,
    location: Option<(f64, f64)>,
}

impl Holding {
    fn days(&self) -> Option<f64> {
        reserve::coverage::days_of_supply(self.stock, self.need_per_day)
    }

    /// What it can give and still hold `warn_days`.
    fn spare(&self) -> f64 {
        (self.stock - self.warn_days * self.need_per_day).max(0.0)
    }

    fn shortfall(&self) -> Option<f64> {
        let days = self.days()?;
        (days < self.target_days).then_some(self.target_days * self.need_per_day - self.stock)
    }
}

/// A need and its transfers, by position in the holdings.
#[derive(Debug, Clone, PartialEq)]
struct Planned {
    needy: usize,
    shortfall: f64,
    /// (donor, amount, distance_km, donor stock after)
    transfers: Vec<(usize, f64, Option<f64>, f64)>,
    unmet: f64,
}

/// Allocates spare stock to shortfalls. `None` holdings (towns we know nothing about)
/// neither give nor receive.
fn plan(holdings: &[Option<Holding>]) -> Vec<Planned> {
    let mut needs: Vec<(usize, f64, f64)> = holdings
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let h = h.as_ref()?;
            Some((i, h.days()?, h.shortfall()?))
        })
        .collect();
    // Most urgent first; ties in registry order (the sort is stable).
    needs.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut spare: Vec<f64> = holdings
        .iter()
        .map(|h| h.as_ref().map_or(0.0, Holding::spare))
        .collect();
    let mut stock_after: Vec<f64> = holdings
        .iter()
        .map(|h| h.as_ref().map_or(0.0, |h| h.stock))
        .collect();
    let mut planned = Vec::with_capacity(needs.len());
    for (needy, _, shortfall) in needs {
        let here = holdings[needy].as_ref().and_then(|h| h.location);
        let mut donors: Vec<(usize, Option<f64>)> = (0..holdings.len())
            .filter(|&d| d != needy && spare[d] > NEGLIGIBLE)
            .map(|d| {
                let there = holdings[d].as_ref().and_then(|h| h.location);
                (d, here.zip(there).map(|(a, b)| distance_km(a, b)))
            })
            .collect();
        // Nearest first; donors without a location last, in registry order.
        donors.sort_by(|a, b| match (a.1, b.1) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        let mut remaining = shortfall;
        let mut transfers = Vec::new();
        for (d, km) in donors {
            if remaining <= NEGLIGIBLE {
                break;
            }
            let amount = spare[d].min(remaining);
            spare[d] -= amount;
            stock_after[d] -= amount;
            remaining -= amount;
            transfers.push((d, amount, km, stock_after[d]));
        }
        planned.push(Planned {
            needy,
            shortfall,
            transfers,
            unmet: if remaining <= NEGLIGIBLE {
                0.0
            } else {
                remaining
            },
        });
    }
    planned
}

/// Great-circle (haversine) distance between two (lat, lon) points in degrees.
pub(crate) fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The mutual-aid plan for `towns` (one cluster), category by category.
pub(crate) fn mutual_aid(ledger: &Ledger, towns: &[TownIdx]) -> Vec<AidNeed> {
    let registry = ledger.registry();
    let mut needs = Vec::new();
    for c in registry.category_indices() {
        let category = registry.category(c);
        let holdings: Vec<Option<Holding>> = towns
            .iter()
            .map(|&t| {
                let town = registry.town(t);
                let coverage = ledger
                    .figures(t)
                    .categories
                    .iter()
                    .find(|cc| cc.category == c)?;
                Some(Holding {
                    stock: coverage.stock,
                    need_per_day: coverage.need_per_day,
                    target_days: coverage.target_days,
                    warn_days: coverage.warn_days,
                    location: town.lat.zip(town.lon),
                })
            })
            .collect();
        for p in plan(&holdings) {
            let needy = registry.town(towns[p.needy]);
            let Some(h) = &holdings[p.needy] else {
                continue;
            };
            needs.push(AidNeed {
                town: needy.id.to_string(),
                town_name: needy.name.clone(),
                category: category.id.to_string(),
                unit: category.unit.clone(),
                days: h.days().unwrap_or(0.0),
                target_days: h.target_days,
                shortfall: p.shortfall,
                transfers: p
                    .transfers
                    .iter()
                    .map(|&(d, amount, distance_km, stock_after)| {
                        let donor_idx = towns[d];
                        let donor = registry.town(donor_idx);
                        let need = holdings[d].as_ref().map_or(0.0, |h| h.need_per_day);
                        AidTransfer {
                            from: donor.id.to_string(),
                            from_name: donor.name.clone(),
                            amount,
                            distance_km,
                            donor_days_after: reserve::coverage::days_of_supply(stock_after, need),
                            donor_verified: ledger.figures(donor_idx).verified,
                        }
                    })
                    .collect(),
                unmet: p.unmet,
            });
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holding(stock: f64, need: f64, at: Option<(f64, f64)>) -> Option<Holding> {
        Some(Holding {
            stock,
            need_per_day: need,
            target_days: 3.0,
            warn_days: 3.5,
            location: at,
        })
    }

    #[test]
    fn haversine_distances() {
        // One degree of latitude is ~111.2 km anywhere; Beijing to Shanghai ~1068 km.
        type LatLon = (f64, f64);
        let cases: &[(LatLon, LatLon, f64, f64)] = &[
            ((39.9, 116.4), (39.9, 116.4), 0.0, 1e-9),
            ((0.0, 0.0), (1.0, 0.0), 111.19, 0.01),
            ((39.9042, 116.4074), (31.2304, 121.4737), 1067.0, 2.0),
        ];
        for (a, b, want, tolerance) in cases {
            let got = distance_km(*a, *b);
            assert!((got - want).abs() <= *tolerance, "{a:?} → {b:?}: {got}");
        }
    }

    #[test]
    fn nearest_donor_gives_first_and_keeps_its_warn_days() {
        let holdings = [
            holding(2000.0, 1000.0, Some((39.93, 116.40))), // 2 days: needs 1000
            holding(4000.0, 1000.0, Some((39.90, 116.50))), // far: spare 500
            holding(3800.0, 1000.0, Some((39.93, 116.41))), // near: spare 300
        ];
        let plan = plan(&holdings);
        assert_eq!(plan.len(), 1);
        let p = &plan[0];
        assert_eq!((p.needy, p.shortfall), (0, 1000.0));
        let order: Vec<(usize, f64)> = p.transfers.iter().map(|t| (t.0, t.1)).collect();
        assert_eq!(order, [(2, 300.0), (1, 500.0)]);
        assert!((p.unmet - 200.0).abs() < 1e-9, "{}", p.unmet);
        for &(d, _, _, after) in &p.transfers {
            let h = holdings[d].as_ref().unwrap();
            assert!(
                after / h.need_per_day >= h.warn_days - 1e-9,
                "donor {d} left {after}"
            );
        }
    }

    #[test]
    fn spare_stock_is_promised_once_most_urgent_first() {
        let holdings = [
            holding(2500.0, 1000.0, None), // 2.5 days: needs 500
            holding(1000.0, 1000.0, None), // 1 day: needs 2000, served first
            holding(5000.0, 1000.0, None), // spare 1500
            None,                          // unknown town: neither gives nor takes
        ];
        let plan = plan(&holdings);
        type Transfers = Vec<(usize, f64)>;
        let summary: Vec<(usize, Transfers, f64)> = plan
            .iter()
            .map(|p| {
                let t = p.transfers.iter().map(|t| (t.0, t.1)).collect();
                (p.needy, t, p.unmet)
            })
            .collect();
        assert_eq!(summary, [(1, vec![(2, 1500.0)], 500.0), (0, vec![], 500.0)]);
    }

    #[test]
    fn a_town_that_needs_none_can_give_all() {
        // Infant formula: the second town has no infants.
        let holdings = [holding(10.0, 15.0, None), holding(40.0, 0.0, None)];
        let plan = plan(&holdings);
        assert_eq!(
            plan[0].transfers.iter().map(|t| t.1).collect::<Vec<_>>(),
            [35.0]
        );
        assert_eq!(plan[0].unmet, 0.0);
    }
}
