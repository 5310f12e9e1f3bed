//! The XDP side of packetd: loads `ebpf/packetd/packetd.bpf.c` (compiled by `build.rs`), fills
//! its configuration map, attaches it to interfaces (native mode first, generic as fallback)
//! and reads its per-CPU counters.

use std::time::Duration;

use std::net::IpAddr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, Pod};

/// The compiled XDP object, embedded at build time (never empty: `build.rs` fails instead).
pub static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/packetd.bpf.o"));

use crate::allow::{Allowlist, Prefix};

/// Capacity of each allowlist trie (`ALLOW_MAX` in `packetd.bpf.c`).
pub const ALLOW_MAX: usize = 1024;

/// Name of the XDP function in the object.
const PROGRAM: &str = "packetd";

/// Mirror of `struct packetd_cfg` in `packetd.bpf.c`: keep the layouts identical.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// `CLOCK_REALTIME - CLOCK_TAI` in nanoseconds.
    pub utc_minus_tai_ns: i64,
    /// RFC 8762 Error Estimate (host order).
    pub error_estimate: u16,
    /// STAMP port; 0 disables the reflector.
    pub stamp_port: u16,
    /// Echo port; 0 disables echo.
    pub echo_port: u16,
    /// Padding, always 0.
    pub pad: u16,
    /// Replies per source address per second; 0 = unbounded.
    pub max_pps_per_source: u32,
    /// Bumped after a prefix leaves the allowlist: invalidates the program's per-CPU cache
    /// of the last allowed source.
    pub allow_generation: u32,
}

// SAFETY: `XdpConfig` is `repr(C)`, has no padding bytes (8 + 4 * 2 + 2 * 4) and every bit
// pattern is valid.
unsafe impl Pod for XdpConfig {}

/// The counters of the XDP program, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// STAMP test packets answered.
    pub reflected: u64,
    /// UDP echo packets answered.
    pub echoed: u64,
    /// Packets to a served port that were not answered because they were malformed.
    pub malformed: u64,
    /// Packets passed to the kernel stack untouched.
    pub passed: u64,
    /// Packets to a served port from a source outside the allowlist (passed, not answered).
    pub denied: u64,
    /// Packets over the per-source rate bound (passed, not answered).
    pub rate_limited: u64,
}

impl Counters {
    /// `self - earlier`, per counter (saturating).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            reflected: self.reflected.saturating_sub(earlier.reflected),
            echoed: self.echoed.saturating_sub(earlier.echoed),
            malformed: self.malformed.saturating_sub(earlier.malformed),
            passed: self.passed.saturating_sub(earlier.passed),
            denied: self.denied.saturating_sub(earlier.denied),
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
        }
    }

    /// `self + other`, per counter (wrapping).
    pub fn plus(&self, other: &Self) -> Self {
        Self {
            reflected: self.reflected.wrapping_add(other.reflected),
            echoed: self.echoed.wrapping_add(other.echoed),
            malformed: self.malformed.wrapping_add(other.malformed),
            passed: self.passed.wrapping_add(other.passed),
            denied: self.denied.wrapping_add(other.denied),
            rate_limited: self.rate_limited.wrapping_add(other.rate_limited),
        }
    }

    /// `(result label, value)` pairs as exported in metrics.
    pub fn labelled(&self) -> [(&'static str, u64); 6] {
        [
            ("reflected", self.reflected),
            ("echoed", self.echoed),
            ("malformed", self.malformed),
            ("passed", self.passed),
            ("denied", self.denied),
            ("rate_limited", self.rate_limited),
        ]
    }
}

/// How the program ended up attached to one interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP.
    Skb,
    /// No XDP: the userspace reflector on UDP sockets.
    Userspace,
}

impl AttachMode {
    /// The name used in config and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
            Self::Userspace => "userspace",
        }
    }
}

/// Which attach modes to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModePolicy {
    /// Native only.
    Native,
    /// Generic only.
    Skb,
    /// Native, then generic when native fails.
    Auto,
}

/// Why the XDP program could not be loaded or attached.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The embedded object was rejected (bad ELF, BTF, or maps the kernel refused).
    #[error("cannot load the embedded XDP object")]
    Load(#[source] aya::EbpfError),
    /// The object lacks a program or map this code expects.
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
    /// The verifier or the kernel refused the program.
    #[error("the kernel refused the XDP program")]
    Program(#[source] aya::programs::ProgramError),
    /// A map could not be opened, read or written.
    #[error("cannot access XDP map {name}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// More prefixes than the program's tries hold.
    #[error(
        "{0} allowed source prefixes; the XDP program holds at most 1024 (check [xdp].allow-sources)"
    )]
    TooManyPrefixes(usize),
    /// The interface does not exist (now).
    #[error("interface \"{0}\" does not exist (check [xdp].interfaces)")]
    NoInterface(String),
    /// Attaching failed in every mode the policy allows.
    #[error("cannot attach XDP to interface \"{iface}\"; check [xdp].interfaces and [xdp].mode")]
    Attach {
        /// Interface name.
        iface: String,
        /// The last attach error.
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// One attachment made by [`Reflector::attach`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// Interface name.
    pub iface: String,
    /// The kernel's index of the interface it is attached to (a re-created interface of the
    /// same name has another).
    pub ifindex: u32,
    /// Mode that worked.
    pub mode: AttachMode,
    /// Why native mode failed, when it was tried and generic was used instead.
    pub native_error: Option<String>,
}

/// The loaded XDP reflector. Dropping it detaches the program from every interface.
pub struct Reflector {
    ebpf: Ebpf,
    config: XdpConfig,
    allow: Allowlist,
    /// The attachments made, by interface name, for [`Reflector::detach`].
    links: Vec<(String, XdpLinkId)>,
}

impl Reflector {
    /// Loads the program into the kernel (not yet attached) with the given ports.
    pub fn load(stamp_port: u16, echo_port: u16) -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(XdpError::Load)?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing("program packetd"))?
            .try_into()
            .map_err(XdpError::Program)?;
        prog.load().map_err(XdpError::Program)?;
        let clock = crate::clock::now_state();
        let mut this = Self {
            ebpf,
            config: XdpConfig {
                utc_minus_tai_ns: clock.utc_minus_tai_ns,
                error_estimate: clock.error_estimate,
                stamp_port,
                echo_port,
                pad: 0,
                max_pps_per_source: 0,
                allow_generation: 0,
            },
            allow: Allowlist::default(),
            links: Vec::new(),
        };
        this.write_config()?;
        Ok(this)
    }

    fn write_config(&mut self) -> Result<(), XdpError> {
        let name = "packetd_cfg";
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(XdpError::Missing("map packetd_cfg"))?;
        let mut arr: Array<&mut MapData, XdpConfig> =
            Array::try_from(map).map_err(|source| XdpError::Map { name, source })?;
        arr.set(0, self.config, 0)
            .map_err(|source| XdpError::Map { name, source })
    }

    /// Sets the per-source reply bound (replies per second per source address; 0 = none).
    pub fn set_max_pps_per_source(&mut self, pps: u32) -> Result<(), XdpError> {
        self.config.max_pps_per_source = pps;
        self.write_config()
    }

    /// Makes the program answer exactly the sources in `allow` (an empty list answers nobody).
    /// Only the differences from the previous list are written to the tries.
    pub fn set_allowlist(&mut self, allow: &Allowlist) -> Result<(), XdpError> {
        if allow.0.len() > ALLOW_MAX {
            return Err(XdpError::TooManyPrefixes(allow.0.len()));
        }
        let gone: Vec<Prefix> = self.allow.0.difference(&allow.0).copied().collect();
        let new: Vec<Prefix> = allow.0.difference(&self.allow.0).copied().collect();
        let removed = !gone.is_empty();
        for p in gone {
            self.trie_op(p, false)?;
            self.allow.0.remove(&p);
        }
        for p in new {
            self.trie_op(p, true)?;
            self.allow.0.insert(p);
        }
        if removed {
            // After the trie changed: the program's cached "allowed" sources are stale now.
            self.config.allow_generation = self.config.allow_generation.wrapping_add(1);
            self.write_config()?;
        }
        Ok(())
    }

    /// The allowlist currently in the program.
    pub fn allowlist(&self) -> &Allowlist {
        &self.allow
    }

    fn trie_op(&mut self, p: Prefix, insert: bool) -> Result<(), XdpError> {
        let len = u32::from(p.len());
        match p.addr() {
            IpAddr::V4(a) => {
                let name = "packetd_allow4";
                let map = self
                    .ebpf
                    .map_mut(name)
                    .ok_or(XdpError::Missing("map packetd_allow4"))?;
                let mut trie: LpmTrie<&mut MapData, [u8; 4], u8> =
                    LpmTrie::try_from(map).map_err(|source| XdpError::Map { name, source })?;
                let key = Key::new(len, a.octets());
                if insert {
                    trie.insert(&key, 1, 0)
                } else {
                    trie.remove(&key)
                }
                .map_err(|source| XdpError::Map { name, source })
            }
            IpAddr::V6(a) => {
                let name = "packetd_allow6";
                let map = self
                    .ebpf
                    .map_mut(name)
                    .ok_or(XdpError::Missing("map packetd_allow6"))?;
                let mut trie: LpmTrie<&mut MapData, [u8; 16], u8> =
                    LpmTrie::try_from(map).map_err(|source| XdpError::Map { name, source })?;
                let key = Key::new(len, a.octets());
                if insert {
                    trie.insert(&key, 1, 0)
                } else {
                    trie.remove(&key)
                }
                .map_err(|source| XdpError::Map { name, source })
            }
        }
    }

    /// Re-reads the clock offset and error estimate and pushes them to the program (call it
    /// periodically: the kernel's error bound and the TAI offset change over time).
    pub fn refresh_clock(&mut self) -> Result<(), XdpError> {
        let clock = crate::clock::now_state();
        self.config.utc_minus_tai_ns = clock.utc_minus_tai_ns;
        self.config.error_estimate = clock.error_estimate;
        self.write_config()
    }

    /// Attaches to `iface` following `policy`.
    pub fn attach(&mut self, iface: &str, policy: ModePolicy) -> Result<Attached, XdpError> {
        let ifindex = if_index(iface).ok_or_else(|| XdpError::NoInterface(iface.to_owned()))?;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Missing("program packetd"))?
            .try_into()
            .map_err(XdpError::Program)?;
        let attach_err = |source| XdpError::Attach {
            iface: iface.to_owned(),
            source,
        };
        let (link, mode, native_error) = match policy {
            ModePolicy::Native => (
                prog.attach_to_if_index(ifindex, XdpMode::Driver)
                    .map_err(attach_err)?,
                AttachMode::Native,
                None,
            ),
            ModePolicy::Skb => (
                prog.attach_to_if_index(ifindex, XdpMode::Skb)
                    .map_err(attach_err)?,
                AttachMode::Skb,
                None,
            ),
            ModePolicy::Auto => match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(link) => (link, AttachMode::Native, None),
                Err(native) => {
                    let reason = error_chain(&native);
                    (
                        prog.attach_to_if_index(ifindex, XdpMode::Skb)
                            .map_err(attach_err)?,
                        AttachMode::Skb,
                        Some(reason),
                    )
                }
            },
        };
        self.links.push((iface.to_owned(), link));
        Ok(Attached {
            iface: iface.to_owned(),
            ifindex,
            mode,
            native_error,
        })
    }

    /// Detaches the program from `iface` (nothing happens when it is not attached there). Call
    /// it when the interface was removed too: the kernel detached the program already, and this
    /// releases what was kept for the attachment.
    pub fn detach(&mut self, iface: &str) {
        let Some(prog) = self
            .ebpf
            .program_mut(PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
        else {
            return;
        };
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|(name, _)| name == iface);
        self.links = kept;
        for (_, link) in gone {
            // An interface already removed has nothing left to detach.
            let _ = prog.detach(link);
        }
    }

    /// The counters summed over all CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        let name = "packetd_counters";
        let map = self
            .ebpf
            .map(name)
            .ok_or(XdpError::Missing("map packetd_counters"))?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|source| XdpError::Map { name, source })?;
        let mut sums = [0_u64; 6];
        for (i, sum) in sums.iter_mut().enumerate() {
            let idx = u32::try_from(i).unwrap_or(0);
            let values = arr
                .get(&idx, 0)
                .map_err(|source| XdpError::Map { name, source })?;
            *sum = values.iter().copied().fold(0_u64, u64::wrapping_add);
        }
        Ok(Counters {
            reflected: sums[0],
            echoed: sums[1],
            malformed: sums[2],
            passed: sums[3],
            denied: sums[4],
            rate_limited: sums[5],
        })
    }

    /// The configuration last written to the program.
    pub fn config(&self) -> XdpConfig {
        self.config
    }

    /// How often [`Reflector::refresh_clock`] should run.
    pub const CLOCK_REFRESH: Duration = Duration::from_secs(1);
}

/// The kernel's index of interface `name`, `None` when no such interface exists now.
pub fn if_index(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok().filter(|&i| i != 0)
}

/// `err` and its sources, joined with ": ".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
