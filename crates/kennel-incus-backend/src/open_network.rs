//! `--network open` on Incus: the container gets the NIC the project's
//! default profile gives (in every other mode kennel masks it), with an
//! IPv4 address kennel picks in the managed network's subnet and Incus
//! reserves for it (two instances cannot hold one address: Incus refuses
//! the second, and kennel picks again). kennel's images have no DHCP
//! client, so kennel configures the interface itself, as the container's
//! root, before anything of the agent's runs: address, default route
//! through the network's gateway, and the gateway (Incus's dnsmasq) as
//! the resolver.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use kennel_incus::{Network, Profile};
use kennel_lib::error::CliError;

/// The profile NIC an open session uses, and the subnet it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenNic {
    /// The device's name in the profile (the instance's device overrides
    /// it, keeping its keys).
    pub device: String,
    pub keys: BTreeMap<String, String>,
    /// The interface inside the container.
    pub interface: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
}

/// Why open mode cannot run: said with what to change.
fn refused(reason: String) -> CliError {
    CliError::usage(format!("--network open on Incus: {reason}")).with_hint(
        "give your project's default profile a NIC on a managed bridge with an IPv4 subnet (`incus profile device add default eth0 nic network=incusbr0`), or use --network allowlist (the default) or restricted",
    )
}

/// The default profile's NIC (`eth0` when it has several) and the network
/// it names; the network's name, for [`nic_on`].
pub fn profile_nic(profile: &Profile) -> Result<(String, BTreeMap<String, String>), CliError> {
    let nics: Vec<(&String, &BTreeMap<String, String>)> = profile
        .devices
        .iter()
        .filter(|(_, keys)| keys.get("type").is_some_and(|kind| kind == "nic"))
        .collect();
    let (device, keys) = nics
        .iter()
        .find(|(device, _)| device.as_str() == "eth0")
        .or_else(|| nics.first())
        .ok_or_else(|| refused("the project's default profile has no network device".into()))?;
    if !keys.contains_key("network") {
        return Err(refused(format!(
            "the profile's device {device} is not on a managed network (kennel needs one to pick the container's address)"
        )));
    }
    Ok((device.to_string(), (*keys).clone()))
}

/// The NIC `device` (with `keys`) on `network`: its gateway and prefix
/// from the network's `ipv4.address` (`10.187.0.1/24`).
pub fn nic_on(
    device: String,
    keys: BTreeMap<String, String>,
    network: &Network,
) -> Result<OpenNic, CliError> {
    // A restricted project is not shown the network's config; the bridge
    // is an interface of this machine, which says the same.
    let address = network
        .config
        .get("ipv4.address")
        .cloned()
        .or_else(|| host_subnet(&network.name))
        .unwrap_or_default();
    let address = address.as_str();
    let parsed = address.split_once('/').and_then(|(gateway, prefix)| {
        Some((
            gateway.parse::<Ipv4Addr>().ok()?,
            prefix.parse::<u8>().ok()?,
        ))
    });
    let Some((gateway, prefix)) = parsed.filter(|(_, prefix)| (8..=30).contains(prefix)) else {
        return Err(refused(format!(
            "network {} has no IPv4 subnet (ipv4.address is {:?})",
            network.name, address
        )));
    };
    let interface = keys.get("name").cloned().unwrap_or_else(|| device.clone());
    Ok(OpenNic {
        device,
        keys,
        interface,
        gateway,
        prefix,
    })
}

/// The IPv4 address and prefix of this machine's interface `name`
/// (`10.187.0.1/24`).
fn host_subnet(name: &str) -> Option<String> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|interface| {
        if interface.interface_name != name {
            return None;
        }
        let address = interface.address?.as_sockaddr_in()?.ip();
        let mask = interface.netmask?.as_sockaddr_in()?.ip();
        Some(format!("{address}/{}", u32::from(mask).count_ones()))
    })
}

impl OpenNic {
    /// An address of the subnet for attempt `attempt` (random: the seed
    /// is the process's own random hasher): never the network's own
    /// address, its broadcast or the gateway.
    pub fn candidate(&self, seed: u64) -> Ipv4Addr {
        let hosts = (1u64 << (32 - u32::from(self.prefix))) - 2;
        let network = u32::from(self.gateway) & (u32::MAX << (32 - u32::from(self.prefix)));
        let mut host = (seed % hosts) as u32 + 1;
        if network + host == u32::from(self.gateway) {
            host = host % hosts as u32 + 1;
        }
        Ipv4Addr::from(network + host)
    }

    /// A random seed for [`OpenNic::candidate`].
    pub fn seed(name: &str, attempt: u32) -> u64 {
        std::collections::hash_map::RandomState::new().hash_one((name, attempt))
    }

    /// The instance's device: the profile's keys with `address` reserved.
    pub fn device_keys(&self, address: Ipv4Addr) -> BTreeMap<String, String> {
        let mut keys = self.keys.clone();
        keys.insert("ipv4.address".into(), address.to_string());
        keys
    }

    /// What the container's root runs to bring the interface up.
    pub fn setup_command(&self, address: Ipv4Addr) -> Vec<String> {
        let script = "set -e; ip link set \"$1\" up; ip addr add \"$2\" dev \"$1\"; \
                      ip route add default via \"$3\"; printf 'nameserver %s\\n' \"$3\" > /etc/resolv.conf";
        vec![
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
            "kennel-open-network".into(),
            self.interface.clone(),
            format!("{address}/{}", self.prefix),
            self.gateway.to_string(),
        ]
    }
}

/// Incus's refusal of an address another instance holds.
pub fn is_address_taken(message: &str) -> bool {
    message.contains("already defined on another NIC")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(devices: &[(&str, &[(&str, &str)])]) -> Profile {
        Profile {
            name: "default".into(),
            devices: devices
                .iter()
                .map(|(name, keys)| {
                    (
                        name.to_string(),
                        keys.iter()
                            .map(|(key, value)| (key.to_string(), value.to_string()))
                            .collect(),
                    )
                })
                .collect(),
            ..Profile::default()
        }
    }

    fn network(address: &str) -> Network {
        Network {
            name: "incusbr0".into(),
            kind: "bridge".into(),
            managed: true,
            config: [("ipv4.address".to_string(), address.to_string())].into(),
        }
    }

    #[test]
    fn the_profile_nic_on_its_subnet() {
        let found = profile(&[
            ("root", &[("type", "disk"), ("path", "/")]),
            (
                "eth0",
                &[("type", "nic"), ("network", "incusbr0"), ("name", "eth0")],
            ),
        ]);
        let (device, keys) = profile_nic(&found).expect("a NIC");
        let nic = nic_on(device, keys, &network("10.187.0.1/24")).expect("a subnet");
        assert_eq!(nic.interface, "eth0");
        assert_eq!(nic.gateway, Ipv4Addr::new(10, 187, 0, 1));
        assert_eq!(nic.prefix, 24);
        let keys = nic.device_keys(Ipv4Addr::new(10, 187, 0, 9));
        assert_eq!(keys["ipv4.address"], "10.187.0.9");
        assert_eq!(keys["network"], "incusbr0");
        assert_eq!(
            nic.setup_command(Ipv4Addr::new(10, 187, 0, 9))[4..],
            ["eth0", "10.187.0.9/24", "10.187.0.1"]
        );
    }

    #[test]
    fn candidates_are_hosts_of_the_subnet_but_the_gateway() {
        let nic =
            nic_on("eth0".into(), BTreeMap::new(), &network("10.187.0.1/24")).expect("a subnet");
        for seed in 0..2000 {
            let address = nic.candidate(seed);
            let octets = address.octets();
            assert_eq!(octets[..3], [10, 187, 0], "{address}");
            assert!(
                octets[3] != 0 && octets[3] != 255 && octets[3] != 1,
                "{address}"
            );
        }
        assert_ne!(nic.candidate(5), nic.candidate(6));
    }

    #[test]
    fn what_open_mode_cannot_use() {
        assert!(profile_nic(&profile(&[("root", &[("type", "disk")])])).is_err());
        let unmanaged = profile(&[(
            "eth0",
            &[("type", "nic"), ("nictype", "bridged"), ("parent", "br0")],
        )]);
        let error = profile_nic(&unmanaged).expect_err("unmanaged");
        assert!(
            error.message.contains("managed network"),
            "{}",
            error.message
        );
        for address in ["none", "", "10.0.0.1", "10.0.0.1/31", "x/24"] {
            assert!(
                nic_on("eth0".into(), BTreeMap::new(), &network(address)).is_err(),
                "{address}"
            );
        }
        assert!(is_address_taken(
            "Failed add validation for device \"eth0\": IP address \"10.187.0.51\" already defined on another NIC"
        ));
    }
}
