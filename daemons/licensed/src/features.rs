//! The feature catalogue: which features exist and which tier they belong to.
//!
//! Community features work on every appliance, licensed or not. Enterprise features need an
//! entitlement when release mode is on. Daemons ask licensed `CheckFeature(name)` with these
//! names; `docs/licensing.md` lists them for operators.

/// Tier of a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Always available.
    Community,
    /// Needs an entitlement in release mode.
    Enterprise,
}

impl Tier {
    /// `community` or `enterprise`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Community => "community",
            Self::Enterprise => "enterprise",
        }
    }
}

/// Every known feature, with its tier.
pub const CATALOGUE: &[(&str, Tier)] = &[
    ("probes", Tier::Community),
    ("probes.tiered-escalation", Tier::Community),
    ("packet.stamp-reflector", Tier::Community),
    ("packet.generator", Tier::Community),
    ("ingest.local", Tier::Community),
    ("api", Tier::Community),
    ("console", Tier::Community),
    ("autoperf", Tier::Enterprise),
    ("central-forwarding", Tier::Enterprise),
    ("central-database", Tier::Enterprise),
    ("sso", Tier::Enterprise),
];

/// The tier of `name`, if it is a known feature.
pub fn tier(name: &str) -> Option<Tier> {
    CATALOGUE.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enterprise_examples_of_the_design_are_gated() {
        for f in ["autoperf", "central-forwarding", "sso"] {
            assert_eq!(tier(f), Some(Tier::Enterprise), "{f}");
        }
        assert_eq!(tier("probes"), Some(Tier::Community));
        assert_eq!(tier("nonsense"), None);
    }
}
