//! `nexus daemon`'s flags: the one table mapping each flag to the configuration key it sets.
//! It drives clap's definition, applying the flags over the file and `NEXUS_…` variables, and
//! the flag named in error messages. It must not interpret values; configuration does.

use clap::{Arg, ArgAction, ArgMatches};
use nexus::config::{Config, ConfigError};

/// One flag of `nexus daemon`.
#[derive(Debug, PartialEq, Eq)]
pub struct DaemonFlag {
    /// `--<long>`.
    pub long: &'static str,
    /// The configuration key it sets (`section.key`).
    pub key: &'static str,
    pub value_name: &'static str,
    pub help: &'static str,
}

const fn flag(
    long: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> DaemonFlag {
    DaemonFlag {
        long,
        key,
        value_name,
        help,
    }
}

/// Every flag of `nexus daemon`, in `--help` order.
pub static DAEMON_FLAGS: &[DaemonFlag] = &[
    flag("listen", "grpc.listen", "LISTEN", "gRPC listen address"),
    flag("data-dir", "daemon.data_dir", "DATA_DIR", "Data directory"),
    flag(
        "store",
        "store.url",
        "STORE",
        "Store URL: sqlite://PATH or postgres://…",
    ),
    flag("node-image", "node.image", "NODE_IMAGE", "Node image"),
    flag(
        "public-address",
        "node.public_address",
        "PUBLIC_ADDRESS",
        "Address advertised in join kits",
    ),
    flag(
        "delegator-listen",
        "delegator.listen",
        "DELEGATOR_LISTEN",
        "Delegator listen address",
    ),
    flag("domain", "delegator.domain", "DOMAIN", "Delegator domain"),
    flag(
        "metrics-listen",
        "metrics.listen",
        "METRICS_LISTEN",
        "Metrics listen address, empty for off",
    ),
    flag(
        "log-format",
        "log.format",
        "LOG_FORMAT",
        "Log format: text or json",
    ),
    flag(
        "log-level",
        "log.level",
        "LOG_LEVEL",
        "Log level, an EnvFilter directive such as info or nexus=debug",
    ),
];

/// The flags given to `nexus daemon`; each overrides the configuration file and `NEXUS_…`
/// variables.
#[derive(Debug, Clone, Default)]
pub struct DaemonFlags {
    given: Vec<(&'static DaemonFlag, String)>,
}

impl DaemonFlags {
    /// Sets each given flag's key in `cfg`.
    pub fn apply(&self, cfg: &mut Config) -> Result<(), ConfigError> {
        self.given
            .iter()
            .try_for_each(|(flag, value)| cfg.set(flag.key, value))
    }

    /// ` (or the --<flag> flag)` when a flag sets `key`, for error messages.
    pub fn hint(key: &str) -> Option<String> {
        DAEMON_FLAGS
            .iter()
            .find(|f| f.key == key)
            .map(|f| format!(" (or the --{} flag)", f.long))
    }
}

impl clap::FromArgMatches for DaemonFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self {
            given: DAEMON_FLAGS
                .iter()
                .filter_map(|f| m.get_one::<String>(f.long).map(|v| (f, v.clone())))
                .collect(),
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for DaemonFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.args(DAEMON_FLAGS.iter().map(|f| {
            Arg::new(f.long)
                .long(f.long)
                .value_name(f.value_name)
                .action(ArgAction::Set)
                .value_parser(clap::value_parser!(String))
                .help(format!("{} ({})", f.help, f.key))
        }))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn every_flag_sets_a_configuration_key() {
        for f in DAEMON_FLAGS {
            assert!(
                nexus::config::keys().iter().any(|k| k.name == f.key),
                "{f:?}"
            );
        }
    }

    #[test]
    fn flags_are_applied_over_the_configuration() {
        let args = super::super::Args::try_parse_from([
            "nexus",
            "daemon",
            "--listen",
            "127.0.0.1:7801",
            "--data-dir",
            "/srv/nexus",
            "--metrics-listen",
            "",
        ])
        .unwrap();
        let super::super::Command::Daemon(flags) = args.command else {
            panic!("not daemon")
        };
        let mut cfg = Config::default();
        flags.apply(&mut cfg).unwrap();
        assert_eq!(cfg.grpc.listen, "127.0.0.1:7801");
        assert_eq!(cfg.daemon.data_dir, "/srv/nexus");
        assert_eq!(cfg.metrics.listen, "");
        assert_eq!(cfg.log.level, "info");
        assert_eq!(
            DaemonFlags::hint("grpc.listen").as_deref(),
            Some(" (or the --listen flag)")
        );
        assert_eq!(DaemonFlags::hint("grpc.api_keys"), None);
    }
}
