//! Resources: what a node declares it has and what an execution asks for, in cpu
//! (millicores), memory and disk (bytes), written the way Kubernetes and Nomad users write
//! them (`250m`, `2`, `64Mi`, `1Gi`).
//!
//! In human-readable encodings (YAML, JSON) amounts are strings; in MessagePack (every
//! message cairn stores) they are plain integers. Either is read back from either.

use std::fmt;
use std::ops::{Add, Sub};
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Cpu in thousandths of a core: `250m` is a quarter of a core, `2` two cores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millicores(pub u64);

/// Memory or disk in bytes: `64Mi` (binary), `100M` (decimal), `512` (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

/// An amount of every resource placement counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: Millicores,
    pub memory: Bytes,
    pub disk: Bytes,
}

/// What one execution of a job asks for; what it leaves out takes the default
/// ([`Resources::REQUEST_DEFAULT`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Millicores>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Bytes>,
}

/// One of the resources, to name the one that ran short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    Memory,
    Disk,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Disk];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Resources {
    /// What an execution asks for when its job does not say: a tenth of a core, 64 MiB of
    /// memory and no disk, small enough that a small edge runs a few dozen idle tasks.
    pub const REQUEST_DEFAULT: Resources = Resources {
        cpu: Millicores(100),
        memory: Bytes(64 << 20),
        disk: Bytes(0),
    };

    /// The most a request may ask of any resource (2^50: a petabyte, or a million million
    /// millicores), so that sums of requests never saturate.
    pub const MAX_REQUEST: u64 = 1 << 50;

    /// The amount of one resource.
    pub fn get(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Cpu => self.cpu.0,
            Resource::Memory => self.memory.0,
            Resource::Disk => self.disk.0,
        }
    }

    /// The first resource of which `request` asks more than `self` has.
    pub fn short_of(&self, request: &Resources) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| request.get(*r) > self.get(*r))
    }

    /// How many times `request` fits in `self`: the fewest over the resources it asks
    /// for (`u64::MAX` for a request of nothing).
    pub fn fits(&self, request: &Resources) -> u64 {
        Resource::ALL
            .into_iter()
            .filter(|r| request.get(*r) > 0)
            .map(|r| self.get(r) / request.get(r))
            .min()
            .unwrap_or(u64::MAX)
    }
}

impl Resources {
    /// Each resource of `self` and `other` combined by `op`.
    fn each(self, other: Resources, op: fn(u64, u64) -> u64) -> Resources {
        Resources {
            cpu: Millicores(op(self.cpu.0, other.cpu.0)),
            memory: Bytes(op(self.memory.0, other.memory.0)),
            disk: Bytes(op(self.disk.0, other.disk.0)),
        }
    }
}

impl Add for Resources {
    type Output = Resources;

    fn add(self, other: Resources) -> Resources {
        self.each(other, u64::saturating_add)
    }
}

impl Sub for Resources {
    type Output = Resources;

    /// What is left; never below zero.
    fn sub(self, other: Resources) -> Resources {
        self.each(other, u64::saturating_sub)
    }
}

impl Request {
    /// The request with the defaults filled in.
    pub fn resolve(&self) -> Resources {
        let default = Resources::REQUEST_DEFAULT;
        Resources {
            cpu: self.cpu.unwrap_or(default.cpu),
            memory: self.memory.unwrap_or(default.memory),
            disk: self.disk.unwrap_or(default.disk),
        }
    }
}

impl fmt::Display for Resources {
    /// `cpu 250m, memory 64Mi, disk 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu {}, memory {}, disk {}",
            self.cpu, self.memory, self.disk
        )
    }
}

impl fmt::Display for Millicores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl fmt::Display for Bytes {
    /// The largest binary unit that divides the amount exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)];
        for (suffix, shift) in units {
            let unit = 1u64 << shift;
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A decimal number with at most three fractional digits, scaled by `unit`: "1.5" with a
/// unit of 1000 is 1500.
fn scaled(number: &str, unit: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction.len() > 3
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let thousandths: u64 = format!("{fraction:0<3}").parse().ok()?;
    whole
        .checked_mul(unit)?
        .checked_add(thousandths.checked_mul(unit)? / 1000)
}

impl FromStr for Millicores {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid cpu {s:?} (write it like 250m, 1 or 1.5)");
        let amount = match s.strip_suffix('m') {
            Some(milli) => milli
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| milli.parse().ok())
                .flatten(),
            None => scaled(s, 1000),
        };
        amount.map(Millicores).ok_or_else(bad)
    }
}

impl FromStr for Bytes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid size {s:?} (write it like 64Mi, 1Gi, 500M or 4096)");
        let suffixes: [(&str, u64); 8] = [
            ("Ki", 1 << 10),
            ("Mi", 1 << 20),
            ("Gi", 1 << 30),
            ("Ti", 1 << 40),
            ("K", 1_000),
            ("M", 1_000_000),
            ("G", 1_000_000_000),
            ("T", 1_000_000_000_000),
        ];
        let (number, unit) = suffixes
            .iter()
            .find_map(|(suffix, unit)| s.strip_suffix(suffix).map(|n| (n, *unit)))
            .unwrap_or((s, 1));
        let amount = if unit == 1 {
            number
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| number.parse().ok())
                .flatten()
        } else {
            scaled(number, unit)
        };
        amount
            .filter(|_| !number.is_empty())
            .map(Bytes)
            .ok_or_else(bad)
    }
}

/// Reads an amount written as a string (`"250m"`) or as a plain integer (`250`, the unit's
/// smallest: millicores, bytes).
struct Amount<T>(std::marker::PhantomData<T>);

impl<T> Visitor<'_> for Amount<T>
where
    T: FromStr<Err = String> + From<u64>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an amount such as \"250m\", \"64Mi\" or an integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v)
            .map(T::from)
            .map_err(|_| E::custom("an amount cannot be negative"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

macro_rules! amount_serde {
    ($t:ty) => {
        impl From<u64> for $t {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_u64(self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(Amount::<$t>(std::marker::PhantomData))
            }
        }
    };
}

amount_serde!(Millicores);
amount_serde!(Bytes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_kubernetes_writes_them() {
        let cpu = |s: &str| s.parse::<Millicores>().map(|c| c.0);
        assert_eq!(cpu("250m"), Ok(250));
        assert_eq!(cpu("2"), Ok(2000));
        assert_eq!(cpu("1.5"), Ok(1500));
        assert_eq!(cpu("0.25"), Ok(250));
        for bad in ["", "m", "1.2345", "-1", "1 core", "2k", "1.5m"] {
            assert!(cpu(bad).is_err(), "{bad:?}");
        }
        let size = |s: &str| s.parse::<Bytes>().map(|b| b.0);
        assert_eq!(size("64Mi"), Ok(64 << 20));
        assert_eq!(size("1Gi"), Ok(1 << 30));
        assert_eq!(size("1.5Gi"), Ok(3 << 29));
        assert_eq!(size("500M"), Ok(500_000_000));
        assert_eq!(size("4096"), Ok(4096));
        for bad in ["", "Mi", "1.5", "64mb", "-1Gi", "1 Gi"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn amounts_print_in_the_largest_exact_unit() {
        assert_eq!(Millicores(250).to_string(), "250m");
        assert_eq!(Millicores(2000).to_string(), "2");
        assert_eq!(Bytes(64 << 20).to_string(), "64Mi");
        assert_eq!(Bytes(1536 << 20).to_string(), "1536Mi");
        assert_eq!(Bytes(500_000_000).to_string(), "500000000");
        assert_eq!(Bytes(0).to_string(), "0");
    }

    #[test]
    fn strings_for_people_integers_on_the_wire_and_either_read_back() {
        let r = Resources {
            cpu: Millicores(250),
            memory: Bytes(64 << 20),
            disk: Bytes(1 << 30),
        };
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cpu": "250m", "memory": "64Mi", "disk": "1Gi"})
        );
        assert_eq!(serde_json::from_value::<Resources>(json).unwrap(), r);
        let packed = rmp_serde::to_vec_named(&r).unwrap();
        let as_integers: serde_json::Value = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(
            as_integers,
            serde_json::json!({"cpu": 250, "memory": 64 << 20, "disk": 1 << 30})
        );
        assert_eq!(rmp_serde::from_slice::<Resources>(&packed).unwrap(), r);
        let bad = serde_json::from_str::<Request>(r#"{"memory": "lots"}"#);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("invalid size \"lots\"")
        );
    }

    #[test]
    fn a_request_fills_in_what_it_leaves_out_and_fits_by_its_scarcest_resource() {
        let request = Request {
            memory: Some(Bytes(256 << 20)),
            ..Request::default()
        }
        .resolve();
        assert_eq!(request.cpu, Resources::REQUEST_DEFAULT.cpu);
        assert_eq!(request.memory, Bytes(256 << 20));
        let node = Resources {
            cpu: Millicores(2000),
            memory: Bytes(1 << 30),
            disk: Bytes(0),
        };
        assert_eq!(
            node.fits(&request),
            4,
            "memory allows 4, cpu 20, disk is not asked"
        );
        assert_eq!(node.short_of(&request), None);
        let big = Resources {
            memory: Bytes(2 << 30),
            ..request
        };
        assert_eq!(node.fits(&big), 0);
        assert_eq!(node.short_of(&big), Some(Resource::Memory));
        assert_eq!((node - big).memory, Bytes(0), "never below zero");
    }
}
