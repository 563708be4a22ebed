//! Owns the HTTP surfaces of the daemon: kubo's RPC API (`/api/v0/*`, POST-only, Origin
//! checks, kubo-shaped JSON and errors; beside it the metrics page, [`crate::metrics`]) and the
//! read-only path gateway (`/ipfs/<cid>`).

use crate::config;
use crate::libkubo::LibKubo;
use crate::unixfs;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const VERSION: &str = "0.42.0+kubo-shim.libkubo-v0.22.0";

/// The kubo version this binary claims: [`VERSION`], or `KUBO_SHIM_VERSION` when set (an image
/// derived from the test image with `ENV KUBO_SHIM_VERSION=0.36.0` stands in for an older kubo,
/// as nexus's image check sees it; nothing else about the stand-in changes).
pub fn claimed_version() -> &'static str {
    static CLAIMED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CLAIMED.get_or_init(|| {
        std::env::var("KUBO_SHIM_VERSION")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| VERSION.to_string())
    })
}
pub const COMMIT: &str = "";
pub const GOLANG: &str = "go1.19";

/// Protocols a kubo 0.22 node (what libkubo embeds) registers; libkubo cannot list them.
const PROTOCOLS: &[&str] = &[
    "/ipfs/bitswap",
    "/ipfs/bitswap/1.0.0",
    "/ipfs/bitswap/1.1.0",
    "/ipfs/bitswap/1.2.0",
    "/ipfs/id/1.0.0",
    "/ipfs/id/push/1.0.0",
    "/ipfs/kad/1.0.0",
    "/ipfs/lan/kad/1.0.0",
    "/ipfs/ping/1.0.0",
    "/libp2p/circuit/relay/0.2.0/stop",
    "/x/",
];

pub struct Node {
    pub repo: PathBuf,
    pub lib: &'static LibKubo,
    pub peer_id: String,
    pub public_key: String,
    pub agent_version: String,
    pub api_port: u16,
    pub fetch_timeout: Duration,
    pub shutting_down: AtomicBool,
    /// `API.HTTPHeaders.Access-Control-Allow-Origin` as read at start-up.
    pub allowed_origins: Option<Vec<String>>,
    /// `API.Authorizations` as (expected Authorization header, AllowedPaths), read at start-up.
    pub authorizations: Vec<AuthScope>,
    /// The gateway's known hosts (kubo's implicit `localhost` and `Gateway.PublicGateways`),
    /// read at start-up.
    pub gateways: Vec<crate::hostname::KnownGateway>,
}

/// (expected Authorization header, AllowedPaths) for one `API.Authorizations` entry.
pub type AuthScope = (String, Vec<String>);

/// kubo's `config.ConvertAuthSecret`: `bearer:T` → `Bearer T`, `basic:U:P` → `Basic b64(U:P)`,
/// `basic:B64` → `Basic B64`, no prefix → bearer.
pub fn auth_header(secret: &str) -> String {
    use base64::Engine;
    if let Some(t) = secret.strip_prefix("bearer:") {
        format!("Bearer {t}")
    } else if let Some(b) = secret.strip_prefix("basic:") {
        if b.contains(':') {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        } else {
            format!("Basic {b}")
        }
    } else {
        format!("Bearer {secret}")
    }
}

/// Start-up snapshot of the API's access settings from the config.
pub fn access_settings(cfg: &Value) -> (Option<Vec<String>>, Vec<AuthScope>) {
    let origins = cfg
        .pointer("/API/HTTPHeaders/Access-Control-Allow-Origin")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        });
    let mut auths = Vec::new();
    if let Some(Value::Object(m)) = cfg.pointer("/API/Authorizations") {
        for scope in m.values() {
            let Some(secret) = scope.get("AuthSecret").and_then(Value::as_str) else {
                continue;
            };
            if secret.is_empty() {
                continue;
            }
            let paths = scope
                .get("AllowedPaths")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            auths.push((auth_header(secret), paths));
        }
    }
    (origins, auths)
}

/// kubo's `withAuthSecrets`: a known Authorization header, and a path under its AllowedPaths
/// (`/api/v0/version` is implicitly allowed for any known header).
fn authorized(node: &Node, path: &str, header: Option<&str>) -> bool {
    if node.authorizations.is_empty() {
        return true;
    }
    let Some(h) = header else { return false };
    node.authorizations.iter().any(|(expected, paths)| {
        expected == h
            && (path == "/api/v0/version" || paths.iter().any(|p| path.starts_with(p.as_str())))
    })
}

pub type Shared = Arc<Node>;

pub fn agent_version(suffix: &str) -> String {
    let mut a = format!("kubo/{}/{COMMIT}", claimed_version());
    if !suffix.is_empty() {
        if !COMMIT.is_empty() {
            a.push('/');
        }
        a.push_str(suffix);
    }
    a
}

/// A kubo-style command error.
struct ApiError {
    status: StatusCode,
    msg: String,
}

type ApiResult = Result<Response, ApiError>;

fn server_err(msg: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        msg: msg.into(),
    }
}

fn client_err(msg: impl Into<String>) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        msg: msg.into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // kubo: cmds.ErrNormal = 0 (HTTP 500), cmds.ErrClient = 1 (HTTP 400).
        let code = if self.status == StatusCode::BAD_REQUEST {
            1
        } else {
            0
        };
        let body = ErrorOut {
            message: self.msg,
            code,
            typ: "error",
        };
        let mut r = (self.status, json_body(&body)).into_response();
        set_json(&mut r);
        r
    }
}

// Response bodies as structs so fields come out in kubo's (Go struct) order.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorOut {
    message: String,
    code: i32,
    #[serde(rename = "Type")]
    typ: &'static str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct IdOut<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    public_key: &'a str,
    addresses: Option<Vec<String>>,
    agent_version: &'a str,
    protocols: Option<Vec<&'a str>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConnInfo<'a> {
    addr: &'a str,
    peer: &'a str,
    identify: IdOut<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct VersionOut<'a> {
    version: &'a str,
    commit: &'a str,
    repo: String,
    system: &'a str,
    golang: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct AddOut {
    name: String,
    hash: String,
    size: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct RepoStatOut {
    repo_size: u64,
    storage_max: u64,
    num_objects: u64,
    repo_path: String,
    version: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigOut<'a> {
    key: &'a str,
    value: &'a Value,
}

fn json_body<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

fn set_json(r: &mut Response) {
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

fn ok_json<T: serde::Serialize>(v: T) -> ApiResult {
    let mut r = (StatusCode::OK, json_body(&v)).into_response();
    set_json(&mut r);
    r.headers_mut()
        .insert("Trailer", HeaderValue::from_static("X-Stream-Error"));
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Origin"));
    Ok(r)
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, text).into_response()
}

/// Query string as ordered pairs (`arg` may repeat).
fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.uri()
        .query()
        .and_then(|q| serde_urlencoded_pairs(q).ok())
        .unwrap_or_default()
}

fn serde_urlencoded_pairs(q: &str) -> Result<Vec<(String, String)>, String> {
    let uri: axum::http::Uri = format!("/?{q}").parse().map_err(|_| "bad query")?;
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| e.to_string())
}

struct Params(Vec<(String, String)>);

impl Params {
    fn args(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == "arg")
            .map(|(_, v)| v.clone())
            .collect()
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// kubo boolean option: present without value or "true" → true.
    fn flag(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some("" | "true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(client_err(format!(
                "could not convert value \"{v}\" to type \"bool\" (for option \"-{key}\")"
            ))),
        }
    }
}

fn origin_allowed(node: &Node, origin: &str) -> bool {
    match &node.allowed_origins {
        Some(list) => list.iter().any(|o| o == "*" || o == origin),
        None => {
            // kubo's defaults allow only the API's own localhost origins.
            let p = node.api_port;
            [
                format!("http://127.0.0.1:{p}"),
                format!("https://127.0.0.1:{p}"),
                format!("http://[::1]:{p}"),
                format!("https://[::1]:{p}"),
                format!("http://localhost:{p}"),
                format!("https://localhost:{p}"),
            ]
            .iter()
            .any(|o| o == origin)
        }
    }
}

/// Entry point for every request on the API port.
pub async fn rpc(State(node): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    // kubo mounts its Prometheus page beside the commands, outside their checks.
    if path == crate::metrics::PATH {
        return crate::metrics::serve();
    }
    let Some(cmd) = path.strip_prefix("/api/v0/") else {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let cmd = cmd.trim_end_matches('/').to_string();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !authorized(&node, &path, auth) {
        return plain(
            StatusCode::FORBIDDEN,
            "Kubo RPC Access Denied: Please provide a valid authorization token as defined in the API.Authorizations configuration.\n",
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let o = origin.to_str().unwrap_or("");
        if !origin_allowed(&node, o) {
            return plain(StatusCode::FORBIDDEN, "403 - Forbidden\n");
        }
    }
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "405 - Method Not Allowed\n");
    }
    let params = Params(query_pairs(&req));
    let res = match cmd.as_str() {
        "id" => id(&node, &params).await,
        "version" => version(&node, &params),
        "diag/healthy" => healthy(&node),
        "swarm/peers" => swarm_peers(&node).await,
        "swarm/connect" => swarm_connect(&node, &params).await,
        "add" => add(&node, &params, req).await,
        "cat" => cat(&node, &params).await,
        "pin/add" => pin_add(&node, &params).await,
        "pin/ls" => pin_ls(&node, &params).await,
        "pin/rm" => pin_rm(&node, &params).await,
        "repo/stat" => repo_stat(&node, &params).await,
        "bootstrap" | "bootstrap/list" => bootstrap_list(&node),
        "bootstrap/add" | "bootstrap/add/default" => {
            bootstrap_add(&node, &params, cmd.ends_with("default"))
        }
        "bootstrap/rm" | "bootstrap/rm/all" => bootstrap_rm(&node, &params, cmd.ends_with("all")),
        "config" => config_cmd(&node, &params),
        "config/show" => config_show(&node),
        "config/replace" => config_replace(&node, req).await,
        "shutdown" => shutdown(&node),
        _ => return plain(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    res.unwrap_or_else(IntoResponse::into_response)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| server_err(format!("internal error: {e}")))
}

async fn blocking_timeout<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, ApiError> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(r) => r
            .map(Some)
            .map_err(|e| server_err(format!("internal error: {e}"))),
        Err(_) => Ok(None),
    }
}

async fn id(node: &Shared, params: &Params) -> ApiResult {
    if let Some(other) = params.args().first() {
        if other != &node.peer_id {
            return Err(server_err(format!(
                "kubo-shim: looking up other peers ({other}) is not supported"
            )));
        }
    }
    let n = node.clone();
    let addrs = blocking(move || n.lib.multiaddrs(&n.repo))
        .await?
        .map_err(server_err)?;
    let addrs: Vec<String> = addrs
        .into_iter()
        .map(|a| format!("{a}/p2p/{}", node.peer_id))
        .collect();
    ok_json(IdOut {
        id: &node.peer_id,
        public_key: &node.public_key,
        addresses: Some(addrs),
        agent_version: &node.agent_version,
        protocols: Some(PROTOCOLS.to_vec()),
    })
}

pub fn repo_version(repo: &Path) -> String {
    std::fs::read_to_string(repo.join("version"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "14".into())
}

fn version(node: &Shared, params: &Params) -> ApiResult {
    if params.flag("number", false)? {
        return ok_json(VersionOut {
            version: claimed_version(),
            commit: "",
            repo: String::new(),
            system: "",
            golang: "",
        });
    }
    ok_json(VersionOut {
        version: claimed_version(),
        commit: COMMIT,
        repo: repo_version(&node.repo),
        system: "amd64/linux",
        golang: GOLANG,
    })
}

fn healthy(node: &Shared) -> ApiResult {
    if node.shutting_down.load(Ordering::SeqCst) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            msg: "node is shutting down".into(),
        });
    }
    ok_json(json!("ok"))
}

async fn swarm_peers(node: &Shared) -> ApiResult {
    let n = node.clone();
    let peers = blocking(move || n.lib.peers(&n.repo))
        .await?
        .map_err(server_err)?;
    let mut list: Vec<ConnInfo> = peers
        .iter()
        .filter_map(|p| {
            let (addr, id) = p.rsplit_once('/')?;
            Some(ConnInfo {
                addr,
                peer: id,
                // kubo's `Identify IdOutput` is a struct, so `omitempty` never drops it.
                identify: IdOut {
                    id: "",
                    public_key: "",
                    addresses: None,
                    agent_version: "",
                    protocols: None,
                },
            })
        })
        .collect();
    list.sort_by(|a, b| a.addr.cmp(b.addr));
    // kubo returns a nil slice (`null`) when there are no connections.
    let peers = if list.is_empty() { None } else { Some(list) };
    ok_json(json!({ "Peers": peers }))
}

async fn swarm_connect(node: &Shared, params: &Params) -> ApiResult {
    let args = params.args();
    if args.is_empty() {
        return Err(client_err("argument \"address\" is required"));
    }
    let mut out = Vec::new();
    for addr in args {
        let id = addr
            .rsplit_once("/p2p/")
            .or_else(|| addr.rsplit_once("/ipfs/"))
            .map(|(_, id)| id.to_string())
            .ok_or_else(|| {
                server_err(format!(
                    "invalid peer address: {addr}: no /p2p/<peer id> component"
                ))
            })?;
        let n = node.clone();
        let a = addr.clone();
        let rc = blocking_timeout(Duration::from_secs(30), move || n.lib.connect(&n.repo, &a))
            .await?
            .unwrap_or(-4);
        match rc {
            0 => out.push(format!("connect {id} success")),
            -2 => {
                return Err(server_err(format!(
                    "connect {id} failure: invalid multiaddr {addr}"
                )))
            }
            -4 => {
                return Err(server_err(format!(
                    "connect {id} failure: context deadline exceeded"
                )))
            }
            rc => {
                return Err(server_err(format!(
                    "connect {id} failure: failed to dial {id} (libkubo code {rc})"
                )))
            }
        }
    }
    ok_json(json!({ "Strings": out }))
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The staging directory inside the repo (see [`temp_path`]); not part of `RepoSize`.
const STAGING_DIR: &str = ".kubo-shim-staging";

/// Where the shim stages an add or a cat: in the repo, not `/tmp`. kubo itself streams an add
/// into the blockstore and needs no temporary space, but libkubo adds from a file, and a nexus
/// node's `/tmp` is a small tmpfs (its root file system is read-only).
fn temp_path(tag: &str) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::var_os("IPFS_PATH")
        .map(|p| PathBuf::from(p).join(STAGING_DIR))
        .unwrap_or_else(std::env::temp_dir);
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("kubo-shim-{}-{tag}-{n}", std::process::id()))
}

/// Removes a temp file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn add(node: &Shared, params: &Params, req: Request) -> ApiResult {
    let only_hash = params.flag("only-hash", false)? || params.flag("n", false)?;
    let pin = params.flag("pin", true)?;
    if let Some(v) = params.get("cid-version") {
        if v != "0" {
            return Err(server_err(format!(
                "kubo-shim: cid-version={v} is not supported (libkubo only adds CIDv0)"
            )));
        }
    }
    if params.flag("raw-leaves", false)? {
        return Err(server_err(
            "kubo-shim: raw-leaves is not supported by libkubo",
        ));
    }
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| client_err(format!("file argument 'path' is required ({e})")))?;
    let mut lines = String::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(client_err(format!("invalid multipart body: {e}"))),
        };
        let name = field.file_name().map(str::to_string).unwrap_or_default();
        let is_dir = field
            .content_type()
            .is_some_and(|c| c.starts_with("application/x-directory"));
        if is_dir {
            return Err(server_err("kubo-shim: adding directories is not supported"));
        }
        let tmp = TempFile(temp_path("add"));
        let mut file = tokio::fs::File::create(&tmp.0)
            .await
            .map_err(|e| server_err(format!("temp file: {e}")))?;
        let mut len: u64 = 0;
        let mut field = field;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    len += chunk.len() as u64;
                    tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                        .await
                        .map_err(|e| server_err(format!("temp file: {e}")))?;
                }
                Ok(None) => break,
                Err(e) => return Err(client_err(format!("invalid multipart body: {e}"))),
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| server_err(format!("temp file: {e}")))?;
        drop(file);
        let n = node.clone();
        let p = tmp.0.clone();
        let cid = blocking(move || {
            let cid = n.lib.add_file(&n.repo, &p, only_hash)?;
            if !pin && !only_hash {
                n.lib.unpin(&n.repo, &cid);
            }
            Ok::<_, String>(cid)
        })
        .await?
        .map_err(server_err)?;
        let shown = if name.is_empty() { cid.clone() } else { name };
        // Exact: read the root block back from flatfs; only-hash stores nothing, so fall back
        // to the importer arithmetic.
        let size = unixfs::flatfs_block_path(&node.repo, &cid)
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| unixfs::dagpb_cumulative_size(&b))
            .unwrap_or_else(|| unixfs::cumulative_size(len));
        let line = AddOut {
            name: shown,
            hash: cid,
            size: size.to_string(),
        };
        lines.push_str(&json_body(&line));
    }
    if lines.is_empty() {
        return Err(client_err("file argument 'path' is required"));
    }
    let mut r = (StatusCode::OK, lines).into_response();
    set_json(&mut r);
    r.headers_mut()
        .insert("X-Chunked-Output", HeaderValue::from_static("1"));
    r.headers_mut()
        .insert("Trailer", HeaderValue::from_static("X-Stream-Error"));
    Ok(r)
}

/// `/ipfs/<cid>` or `<cid>` → cid; errors on anything libkubo cannot fetch.
fn cid_arg(arg: &str) -> Result<String, String> {
    let s = arg.trim_start_matches("/ipfs/");
    let s = s.trim_end_matches('/');
    if s.contains('/') {
        return Err(format!(
            "kubo-shim: paths inside a DAG are not supported: {arg}"
        ));
    }
    if !unixfs::looks_like_cid(s) {
        return Err(format!("invalid path {arg:?}: invalid cid: {s}"));
    }
    Ok(s.to_string())
}

enum Fetch {
    Done(TempFile),
    TimedOut,
    Failed(i32),
}

async fn fetch(node: &Shared, cid: &str) -> Result<Fetch, ApiError> {
    let tmp = TempFile(temp_path("get"));
    let n = node.clone();
    let c = cid.to_string();
    let dest = tmp.0.clone();
    let rc = blocking_timeout(node.fetch_timeout, move || {
        n.lib.download(&n.repo, &c, &dest)
    })
    .await?;
    Ok(match rc {
        None => Fetch::TimedOut,
        Some(0) => Fetch::Done(tmp),
        Some(rc) => Fetch::Failed(rc),
    })
}

async fn cat(node: &Shared, params: &Params) -> ApiResult {
    let args = params.args();
    let Some(arg) = args.first() else {
        return Err(client_err("argument \"ipfs-path\" is required"));
    };
    let cid = cid_arg(arg).map_err(client_err)?;
    let offset: u64 = match params.get("offset") {
        Some(v) => v
            .parse()
            .map_err(|_| client_err(format!("invalid offset {v:?}")))?,
        None => 0,
    };
    let length: Option<u64> = match params.get("length") {
        Some(v) => Some(
            v.parse()
                .map_err(|_| client_err(format!("invalid length {v:?}")))?,
        ),
        None => None,
    };
    match fetch(node, &cid).await? {
        Fetch::Done(tmp) => {
            if tmp.0.is_dir() {
                return Err(server_err("this dag node is a directory"));
            }
            let data = tokio::fs::read(&tmp.0)
                .await
                .map_err(|e| server_err(format!("read: {e}")))?;
            let start = (offset as usize).min(data.len());
            let end = length.map_or(data.len(), |l| (start + l as usize).min(data.len()));
            let mut r = (StatusCode::OK, data[start..end].to_vec()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r.headers_mut()
                .insert("X-Stream-Output", HeaderValue::from_static("1"));
            Ok(r)
        }
        Fetch::TimedOut => Err(server_err(format!(
            "kubo-shim: could not fetch {cid} within {:?}: context deadline exceeded",
            node.fetch_timeout
        ))),
        Fetch::Failed(rc) => Err(server_err(format!(
            "failed to fetch {cid} (libkubo code {rc})"
        ))),
    }
}

async fn current_pins(node: &Shared) -> Result<Vec<String>, ApiError> {
    let n = node.clone();
    blocking(move || n.lib.pins(&n.repo))
        .await?
        .map_err(server_err)
}

async fn pin_add(node: &Shared, params: &Params) -> ApiResult {
    let args = params.args();
    if args.is_empty() {
        return Err(client_err("argument \"ipfs-path\" is required"));
    }
    let mut pinned = Vec::new();
    for arg in args {
        let cid = cid_arg(&arg).map_err(client_err)?;
        let n = node.clone();
        let c = cid.clone();
        let rc = blocking_timeout(node.fetch_timeout, move || n.lib.pin(&n.repo, &c)).await?;
        match rc {
            Some(0) => pinned.push(cid),
            None => return Err(server_err(format!("pin: {cid}: context deadline exceeded"))),
            Some(rc) => return Err(server_err(format!("pin: {cid}: libkubo code {rc}"))),
        }
    }
    ok_json(json!({ "Pins": pinned }))
}

async fn pin_ls(node: &Shared, params: &Params) -> ApiResult {
    let typ = params.get("type").unwrap_or("all");
    if !["all", "recursive", "direct", "indirect"].contains(&typ) {
        return Err(client_err(format!(
            "invalid type '{typ}', must be one of {{direct, indirect, recursive, all}}"
        )));
    }
    let pins = current_pins(node).await?;
    let listed: Vec<String> = if typ == "all" || typ == "recursive" {
        pins
    } else {
        vec![]
    };
    let args = params.args();
    let selected: Vec<String> = if args.is_empty() {
        listed
    } else {
        let mut sel = Vec::new();
        for arg in args {
            let cid = cid_arg(&arg).map_err(client_err)?;
            if !listed.contains(&cid) {
                return Err(server_err(format!("path '{arg}' is not pinned")));
            }
            sel.push(cid);
        }
        sel
    };
    if params.flag("stream", false)? {
        let mut body = String::new();
        for c in &selected {
            body.push_str(&json_body(&json!({"Cid": c, "Type": "recursive"}))); // sorted = Go order
        }
        let mut r = (StatusCode::OK, body).into_response();
        set_json(&mut r);
        return Ok(r);
    }
    let mut keys = serde_json::Map::new();
    for c in selected {
        keys.insert(c, json!({"Type": "recursive"}));
    }
    ok_json(json!({ "Keys": keys }))
}

async fn pin_rm(node: &Shared, params: &Params) -> ApiResult {
    let args = params.args();
    if args.is_empty() {
        return Err(client_err("argument \"ipfs-path\" is required"));
    }
    let pins = current_pins(node).await?;
    let mut removed = Vec::new();
    for arg in args {
        let cid = cid_arg(&arg).map_err(client_err)?;
        if !pins.contains(&cid) {
            return Err(server_err("not pinned or pinned indirectly"));
        }
        let n = node.clone();
        let c = cid.clone();
        let rc = blocking(move || n.lib.unpin(&n.repo, &c)).await?;
        if rc != 0 {
            return Err(server_err(format!("unpin {cid}: libkubo code {rc}")));
        }
        removed.push(cid);
    }
    ok_json(json!({ "Pins": removed }))
}

fn dir_stats(dir: &Path, size: &mut u64, objects: &mut u64, in_blocks: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let p = e.path();
        // kubo streams into its blockstore and stages nothing: its RepoSize has no staging.
        if p.file_name().is_some_and(|n| n == STAGING_DIR) {
            continue;
        }
        if meta.is_dir() {
            let blocks = in_blocks || p.file_name().is_some_and(|n| n == "blocks");
            dir_stats(&p, size, objects, blocks);
        } else {
            *size += meta.len();
            if in_blocks && p.extension().is_some_and(|x| x == "data") {
                *objects += 1;
            }
        }
    }
}

/// kubo's `repo/stat`; with `size-only` (what a caller that only needs `RepoSize` asks for:
/// kubo then skips counting objects) the other fields are zero values, as kubo emits them.
async fn repo_stat(node: &Shared, params: &Params) -> ApiResult {
    let size_only = params.flag("size-only", false)?;
    let cfg = config::load(&node.repo).map_err(server_err)?;
    let max = cfg
        .pointer("/Datastore/StorageMax")
        .and_then(Value::as_str)
        .unwrap_or("10GB");
    let storage_max = config::parse_bytes(max).map_err(server_err)?;
    let repo = node.repo.clone();
    let (size, objects) = blocking(move || {
        let (mut s, mut o) = (0, 0);
        dir_stats(&repo, &mut s, &mut o, false);
        (s, o)
    })
    .await?;
    if size_only {
        return ok_json(RepoStatOut {
            repo_size: size,
            storage_max,
            num_objects: 0,
            repo_path: String::new(),
            version: String::new(),
        });
    }
    ok_json(RepoStatOut {
        repo_size: size,
        storage_max,
        num_objects: objects,
        repo_path: node.repo.to_string_lossy().into_owned(),
        version: format!("fs-repo@{}", repo_version(&node.repo)),
    })
}

fn bootstrap_peers(cfg: &Value) -> Vec<Value> {
    cfg.get("Bootstrap")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn bootstrap_list(node: &Shared) -> ApiResult {
    let cfg = config::load(&node.repo).map_err(server_err)?;
    ok_json(json!({ "Peers": bootstrap_peers(&cfg) }))
}

fn bootstrap_add(node: &Shared, params: &Params, default: bool) -> ApiResult {
    let mut cfg = config::load(&node.repo).map_err(server_err)?;
    let mut new: Vec<String> = params.args();
    if default || params.flag("default", false)? {
        new.extend(config::DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()));
    }
    if new.is_empty() {
        return Err(client_err("no bootstrap peers to add"));
    }
    let mut peers = bootstrap_peers(&cfg);
    let mut added = Vec::new();
    for p in new {
        if !p.contains("/p2p/") && !p.contains("/ipfs/") && p != "auto" {
            return Err(server_err(format!(
                "invalid bootstrap address {p}: missing /p2p/<peer id>"
            )));
        }
        if !peers.iter().any(|x| x.as_str() == Some(&p)) {
            peers.push(Value::String(p.clone()));
            added.push(p);
        }
    }
    config::set(&mut cfg, "Bootstrap", Value::Array(peers)).map_err(server_err)?;
    config::save(&node.repo, &cfg).map_err(server_err)?;
    ok_json(json!({ "Peers": added }))
}

fn bootstrap_rm(node: &Shared, params: &Params, all: bool) -> ApiResult {
    let mut cfg = config::load(&node.repo).map_err(server_err)?;
    let peers = bootstrap_peers(&cfg);
    let (removed, kept): (Vec<Value>, Vec<Value>) = if all || params.flag("all", false)? {
        (peers, vec![])
    } else {
        let args = params.args();
        if args.is_empty() {
            return Err(client_err("argument \"peer\" is required"));
        }
        peers
            .into_iter()
            .partition(|p| p.as_str().is_some_and(|s| args.iter().any(|a| a == s)))
    };
    config::set(&mut cfg, "Bootstrap", Value::Array(kept)).map_err(server_err)?;
    config::save(&node.repo, &cfg).map_err(server_err)?;
    ok_json(json!({ "Peers": removed }))
}

fn config_cmd(node: &Shared, params: &Params) -> ApiResult {
    let args = params.args();
    let Some(key) = args.first() else {
        return Err(client_err("argument \"key\" is required"));
    };
    if config::touches_privkey(key) {
        let msg = if args.len() > 1 {
            config::PRIVKEY_SET_ERR
        } else {
            config::PRIVKEY_SHOW_ERR
        };
        return Err(server_err(msg));
    }
    let mut cfg = config::load(&node.repo).map_err(server_err)?;
    if let Some(raw) = args.get(1) {
        let value = config::parse_cli_value(
            raw,
            params.flag("json", false)?,
            params.flag("bool", false)?,
        )
        .map_err(server_err)?;
        config::set_checked(&mut cfg, key, value.clone()).map_err(server_err)?;
        config::save(&node.repo, &cfg).map_err(server_err)?;
        return ok_json(ConfigOut { key, value: &value });
    }
    let value = config::get(&cfg, key)
        .map_err(|e| server_err(format!("failed to get config value: {e}")))?;
    ok_json(ConfigOut { key, value })
}

fn config_show(node: &Shared) -> ApiResult {
    let cfg = config::load(&node.repo).map_err(server_err)?;
    let mut r = (
        StatusCode::OK,
        config::to_go_json(&config::without_privkey(&cfg)),
    )
        .into_response();
    set_json(&mut r);
    Ok(r)
}

async fn config_replace(node: &Shared, req: Request) -> ApiResult {
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| client_err(format!("argument \"file\" is required ({e})")))?;
    let field = mp
        .next_field()
        .await
        .map_err(|e| client_err(format!("invalid multipart body: {e}")))?
        .ok_or_else(|| client_err("argument \"file\" is required"))?;
    let bytes = field
        .bytes()
        .await
        .map_err(|e| client_err(format!("invalid multipart body: {e}")))?;
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| server_err("config is not UTF-8"))?;
    let new = config::parse(&text).map_err(|_| server_err("failed to decode file as config"))?;
    let old = config::load(&node.repo).map_err(server_err)?;
    let merged = config::replace(&old, new).map_err(server_err)?;
    config::save(&node.repo, &merged).map_err(server_err)?;
    Ok(StatusCode::OK.into_response())
}

fn shutdown(node: &Shared) -> ApiResult {
    node.shutting_down.store(true, Ordering::SeqCst);
    // The daemon loop notices the flag and runs the normal shutdown path.
    crate::daemon::request_shutdown();
    Ok(StatusCode::OK.into_response())
}

/// Entry point for every request on the gateway port.
pub async fn gateway(
    State(node): State<Shared>,
    method: Method,
    headers: HeaderMap,
    req: Request,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "405 - Method Not Allowed\n");
    }
    let path = req.uri().path().to_string();
    // boxo's hostname handler: a known subdomain gateway (X-Forwarded-Host before Host)
    // redirects path-form requests, answering 301 with the content where it would be 200.
    let redirect =
        crate::hostname::subdomain_redirect(&node.gateways, &headers, &path, req.uri().query());
    let mut resp = serve_path(&node, &method, &path).await;
    if let Some(location) = redirect.and_then(|l| HeaderValue::from_str(&l).ok()) {
        if resp.status() == StatusCode::OK {
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
        }
        resp.headers_mut().insert(header::LOCATION, location);
    }
    resp
}

/// The path gateway's answer for `path` (`/ipfs/<cid>` of a single file).
async fn serve_path(node: &Shared, method: &Method, path: &str) -> Response {
    let Some(rest) = path.strip_prefix("/ipfs/") else {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let cid = match cid_arg(rest) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    match fetch(node, &cid).await {
        Ok(Fetch::Done(tmp)) => {
            if tmp.0.is_dir() {
                return (
                    StatusCode::NOT_IMPLEMENTED,
                    "kubo-shim: directory listings are not supported\n",
                )
                    .into_response();
            }
            let data = match tokio::fs::read(&tmp.0).await {
                Ok(d) => d,
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
                }
            };
            let ctype = if std::str::from_utf8(&data).is_ok() {
                "text/plain; charset=utf-8"
            } else {
                "application/octet-stream"
            };
            let len = data.len();
            let body = if *method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(data)
            };
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            if let Ok(v) = HeaderValue::from_str(&format!("\"{cid}\"")) {
                h.insert(header::ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("/ipfs/{cid}")) {
                h.insert("X-Ipfs-Path", v);
            }
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=29030400, immutable"),
            );
            r
        }
        Ok(Fetch::TimedOut) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "failed to fetch {cid}: retrieval timed out after {:?}\n",
                node.fetch_timeout
            ),
        )
            .into_response(),
        Ok(Fetch::Failed(rc)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to fetch {cid} (libkubo code {rc})\n"),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn auth_secrets_convert_like_kubo() {
        assert_eq!(auth_header("bearer:tok"), "Bearer tok");
        assert_eq!(auth_header("tok"), "Bearer tok");
        assert_eq!(auth_header("basic:u:p"), "Basic dTpw");
        assert_eq!(auth_header("basic:dTpw"), "Basic dTpw");
        let cfg = json!({"API": {"Authorizations": {"nexus": {"AuthSecret": "bearer:s3cret", "AllowedPaths": ["/api/v0/id"]}},
                                 "HTTPHeaders": {"Access-Control-Allow-Origin": ["https://ok.example"]}}});
        let (origins, auths) = access_settings(&cfg);
        assert_eq!(origins, Some(vec!["https://ok.example".to_string()]));
        assert_eq!(
            auths,
            vec![("Bearer s3cret".to_string(), vec!["/api/v0/id".to_string()])]
        );
    }
}
