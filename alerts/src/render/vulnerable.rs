//! The line a town's message gives to the vulnerable people its problems reach, per
//! community (村社) (docs/design.md#communities): "影响 3 个村社 52 名弱势人员" /
//! "Affects 52 vulnerable people in 3 communities", then the communities by name.
//! Counts only; the registry names no persons.

use reserve::Ledger;
use reserve::registry::{Lang, TownIdx};
use reserve::vulnerable::affected;

/// Communities whose vulnerable people a town's problems reach now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedPeople {
    /// Affected people over the communities, each counted once.
    pub people: u64,
    /// Community names with their affected people, in registry order.
    pub communities: Vec<(String, u64)>,
}

/// Communities named in a message at most: a town of forty villages must still fit an
/// email a duty officer reads on a phone; the rest are counted.
const NAMED_AT_MOST: usize = 8;

impl AffectedPeople {
    /// Who in `town` is affected by the ledger's latest figures; `None` when nobody
    /// (or the town lists no communities).
    pub fn of(ledger: &Ledger, town: TownIdx) -> Option<AffectedPeople> {
        let found = affected(ledger, town);
        if found.is_empty() {
            return None;
        }
        let communities = ledger.registry().communities();
        Some(AffectedPeople {
            people: found.people,
            communities: found
                .communities
                .iter()
                .map(|a| (communities[a.community].name.clone(), a.people))
                .collect(),
        })
    }

    /// The sentence in the reader's language: the count, then the communities by name.
    pub fn line(&self, lang: Lang) -> String {
        let named = self.communities.iter().take(NAMED_AT_MOST);
        let rest = self.communities.len().saturating_sub(NAMED_AT_MOST);
        match lang {
            Lang::Zh => {
                let list: Vec<String> = named.map(|(c, p)| format!("{c} {p} 人")).collect();
                let more = if rest > 0 {
                    format!("等（另有 {rest} 个村社）")
                } else {
                    String::new()
                };
                format!("{}：{}{more}", self.count(lang), list.join("、"))
            }
            Lang::En => {
                let list: Vec<String> = named.map(|(c, p)| format!("{c} {p}")).collect();
                let more = if rest > 0 {
                    format!(" and {rest} more")
                } else {
                    String::new()
                };
                format!("{}: {}{more}", self.count(lang), list.join(", "))
            }
        }
    }

    /// The count without names, as a digest gives it under each town (a district
    /// contact needs how many; the town's own message names them).
    pub fn count(&self, lang: Lang) -> String {
        let n = self.communities.len() as u64;
        match lang {
            Lang::Zh => format!("影响 {n} 个村社 {} 名弱势人员", self.people),
            Lang::En => format!(
                "Affects {} vulnerable {} in {n} {}",
                self.people,
                plural(self.people, "person", "people"),
                plural(n, "community", "communities")
            ),
        }
    }

    /// The SMS's short form, with the separator that follows the problem:
    /// "，涉及 3 村社 弱势 126 人" / "; 3 communities, 126 vulnerable".
    pub fn sms(&self, lang: Lang) -> String {
        let n = self.communities.len() as u64;
        match lang {
            Lang::Zh => format!("，涉及 {n} 村社 弱势 {} 人", self.people),
            Lang::En => format!(
                "; {n} {}, {} vulnerable",
                plural(n, "community", "communities"),
                self.people
            ),
        }
    }

    /// Several towns' affected people together (a digest's SMS): each town's
    /// communities are its own, so the counts add.
    pub fn total<'a>(
        towns: impl IntoIterator<Item = &'a AffectedPeople>,
    ) -> Option<AffectedPeople> {
        let mut total = AffectedPeople {
            people: 0,
            communities: Vec::new(),
        };
        for town in towns {
            total.people += town.people;
            total.communities.extend(town.communities.iter().cloned());
        }
        (total.people > 0).then_some(total)
    }
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affected(communities: &[(&str, u64)]) -> AffectedPeople {
        AffectedPeople {
            people: communities.iter().map(|(_, p)| p).sum(),
            communities: communities
                .iter()
                .map(|(c, p)| (c.to_string(), *p))
                .collect(),
        }
    }

    #[test]
    fn the_line_names_communities_and_counts_in_both_languages() {
        let three = affected(&[("三眼井社区", 40), ("吉市口社区", 11), ("皇城根社区", 1)]);
        assert_eq!(
            three.line(Lang::Zh),
            "影响 3 个村社 52 名弱势人员：三眼井社区 40 人、吉市口社区 11 人、皇城根社区 1 人"
        );
        assert_eq!(
            three.line(Lang::En),
            "Affects 52 vulnerable people in 3 communities: 三眼井社区 40, 吉市口社区 11, \
             皇城根社区 1"
        );
        let one = affected(&[("Sanyanjing", 1)]);
        assert_eq!(
            one.line(Lang::En),
            "Affects 1 vulnerable person in 1 community: Sanyanjing 1"
        );
        let many: Vec<(String, u64)> = (1..=10).map(|i| (format!("c{i}"), 1)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(c, p)| (c.as_str(), *p)).collect();
        let many = affected(&many);
        assert!(
            many.line(Lang::En).ends_with("c8 1 and 2 more"),
            "{}",
            many.line(Lang::En)
        );
        assert!(many.line(Lang::Zh).ends_with("c8 1 人等（另有 2 个村社）"));
    }

    #[test]
    fn the_count_and_the_sms_form_say_how_many_without_names() {
        let three = affected(&[("三眼井社区", 100), ("吉市口社区", 25), ("皇城根社区", 1)]);
        assert_eq!(three.count(Lang::Zh), "影响 3 个村社 126 名弱势人员");
        assert_eq!(
            three.count(Lang::En),
            "Affects 126 vulnerable people in 3 communities"
        );
        assert_eq!(three.sms(Lang::Zh), "，涉及 3 村社 弱势 126 人");
        assert_eq!(three.sms(Lang::En), "; 3 communities, 126 vulnerable");
        let one = affected(&[("Sanyanjing", 1)]);
        assert_eq!(one.sms(Lang::En), "; 1 community, 1 vulnerable");
        let total = AffectedPeople::total([&three, &one]).unwrap();
        assert_eq!((total.people, total.communities.len()), (127, 4));
        assert_eq!(AffectedPeople::total([]), None);
    }
}
