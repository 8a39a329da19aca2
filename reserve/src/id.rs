//! Typed ids. They parse (`TownId::parse`), so a value of the type is a valid slug and
//! nothing downstream validates it again. Slugs are what MQTT topics, line-protocol tags
//! and URLs carry, which is why the alphabet is so small: no escaping is ever needed.

use std::fmt;
use std::sync::Arc;

/// Longest id accepted. Ids travel in MQTT topics and InfluxDB tags on every reading.
pub const MAX_ID_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id {0:?} is longer than {MAX_ID_LEN} characters")]
    TooLong(String),
    #[error("id {0:?} may contain only a-z, 0-9 and '-'")]
    BadChar(String),
}

/// Checks the slug alphabet `[a-z0-9-]+`.
pub fn check_slug(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.to_owned()));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(IdError::BadChar(s.to_owned()));
    }
    Ok(())
}

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // `Arc<str>`: ids are cloned into every reading, alert and line; cloning is a
        // refcount bump, not an allocation.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_slug(s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

slug_id!(
    /// A street or town (街镇): the unit that must hold three days of supplies.
    TownId
);
slug_id!(
    /// A warehouse, water point or power unit; one gateway reports for it.
    FacilityId
);
slug_id!(
    /// A category of supply (water, food, …).
    CategoryId
);
slug_id!(
    /// A resilient-city cluster (组团) of towns that aid each other.
    ClusterId
);
slug_id!(
    /// An administrative district (区).
    DistrictId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_parse_and_bad_ones_say_why() {
        let cases: &[(&str, Result<(), IdError>)] = &[
            ("jingshan", Ok(())),
            ("wh-9", Ok(())),
            ("c01", Ok(())),
            ("", Err(IdError::Empty)),
            ("Jingshan", Err(IdError::BadChar("Jingshan".into()))),
            ("a/b", Err(IdError::BadChar("a/b".into()))),
            ("a+b", Err(IdError::BadChar("a+b".into()))),
            ("景山", Err(IdError::BadChar("景山".into()))),
            ("a b", Err(IdError::BadChar("a b".into()))),
        ];
        for (input, want) in cases {
            assert_eq!(&TownId::parse(input).map(|_| ()), want, "input {input:?}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert_eq!(TownId::parse(&long).unwrap_err(), IdError::TooLong(long));
        assert!(TownId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    #[test]
    fn ids_round_trip_through_serde() {
        let id: FacilityId = serde_json::from_str("\"wh-1\"").unwrap();
        assert_eq!(id.as_str(), "wh-1");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"wh-1\"");
        let err = serde_json::from_str::<FacilityId>("\"WH\"").unwrap_err();
        assert!(err.to_string().contains("may contain only"), "{err}");
    }
}
