//! Owns the image's `/sbin/gosu`: a minimal stand-in for tianon/gosu (`gosu USER CMD ARGS…`),
//! which kubo's entrypoint uses to drop from root to the `ipfs` user. busybox's setpriv lacks
//! --reuid, so this small binary is built from the same crate.

use std::ffi::CString;

fn lookup(user: &str) -> Result<(u32, u32, String), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 6 && (f[0] == user || f[2] == user) {
            let uid = f[2].parse().map_err(|_| format!("bad uid for {user}"))?;
            let gid = f[3].parse().map_err(|_| format!("bad gid for {user}"))?;
            return Ok((uid, gid, f[5].to_string()));
        }
    }
    // Numeric "uid[:gid]" without a passwd entry.
    let (u, g) = user.split_once(':').unwrap_or((user, user));
    match (u.parse(), g.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid, "/".into())),
        _ => Err(format!(
            "unable to find user {user}: no matching entries in passwd file"
        )),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return Err("usage: gosu user-spec command [args]".into());
    }
    let (uid, gid, home) = lookup(&args[0])?;
    let cargs: Vec<CString> = args[1..]
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| "argument contains NUL".to_string()))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    std::env::set_var("HOME", home);
    let groups = [gid as libc::gid_t];
    // SAFETY: plain libc calls with valid arguments; argv is NULL-terminated and outlives execvp.
    unsafe {
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return Err("setgroups failed".into());
        }
        if libc::setgid(gid) != 0 {
            return Err("setgid failed".into());
        }
        if libc::setuid(uid) != 0 {
            return Err("setuid failed".into());
        }
        libc::execvp(argv[0], argv.as_ptr());
    }
    Err(format!(
        "exec {}: {}",
        args[1],
        std::io::Error::last_os_error()
    ))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
