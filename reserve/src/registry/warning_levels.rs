//! Warning levels (预警等级, docs/design.md#warning-levels): what the registry says each
//! level changes while an admin has it in force over a part of the city. The seed's
//! plans are drawn up per warning level: under a red rainstorm warning a town holds five
//! days instead of three, officers are told sooner, and named shelters start converting.
//! A level the registry does not list changes nothing but what the board and the
//! messages say.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DualUse, Registry};
use crate::id::FacilityId;

/// The four levels of the national warning scheme, lowest first: the level in force
/// for a town is the highest of those covering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarningLevel {
    Blue,
    Yellow,
    Orange,
    Red,
}

impl WarningLevel {
    pub const ALL: [WarningLevel; 4] = [
        WarningLevel::Blue,
        WarningLevel::Yellow,
        WarningLevel::Orange,
        WarningLevel::Red,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WarningLevel::Blue => "blue",
            WarningLevel::Yellow => "yellow",
            WarningLevel::Orange => "orange",
            WarningLevel::Red => "red",
        }
    }

    pub fn parse(s: &str) -> Option<WarningLevel> {
        WarningLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// The level's name as a Chinese reader knows it (蓝色预警 without 预警).
    pub fn name_zh(self) -> &'static str {
        match self {
            WarningLevel::Blue => "蓝色",
            WarningLevel::Yellow => "黄色",
            WarningLevel::Orange => "橙色",
            WarningLevel::Red => "红色",
        }
    }

    /// The level's name for an English reader, capitalised.
    pub fn name_en(self) -> &'static str {
        match self {
            WarningLevel::Blue => "Blue",
            WarningLevel::Yellow => "Yellow",
            WarningLevel::Orange => "Orange",
            WarningLevel::Red => "Red",
        }
    }
}

impl fmt::Display for WarningLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one level changes (`[warning_levels.red]`); every part optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WarningPlan {
    /// The days target of the towns under the level, when higher than their own.
    pub days_target: Option<f64>,
    /// The alert engine's `group_wait` for the towns under it, when shorter.
    pub group_wait: Option<Duration>,
    /// The alert engine's `escalate_after` for the towns under it, when shorter.
    pub escalate_after: Option<Duration>,
    /// Shelters to start converting when the level is set: by everyday use, or by id.
    pub pre_activate: Vec<PreActivate>,
}

/// A `pre_activate` entry: every shelter of a dual-use type, or one shelter by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreActivate {
    DualUse(DualUse),
    Shelter(FacilityId),
}

/// Each level's plan; a level without one changes nothing.
pub type WarningPlans = BTreeMap<WarningLevel, WarningPlan>;

impl Registry {
    /// The registry with these plans (replacing any it had). The caller (the loader, a
    /// test) guarantees each number is in range and each shelter id names a shelter.
    pub fn with_warning_plans(mut self, plans: WarningPlans) -> Registry {
        self.warning_plans = plans;
        self
    }

    /// What `level` changes, if the registry says.
    pub fn warning_plan(&self, level: WarningLevel) -> Option<&WarningPlan> {
        self.warning_plans.get(&level)
    }

    /// Every level's plan, lowest level first.
    pub fn warning_plans(&self) -> &WarningPlans {
        &self.warning_plans
    }
}
