//! Calls to any RPC by name, built at run time from a service descriptor (`nexus ctl`).
//!
//! Owns fetching the schema through server reflection (so a newer daemon's RPCs work with an
//! older CLI), turning `Field=Value` arguments into a request message, the dynamic codec, and
//! the proto3 JSON rendering every `--json` output of the CLI shares. It must not know any
//! particular RPC.

use prost::Message;
use prost_reflect::prost_types::{FileDescriptorProto, FileDescriptorSet};
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions, ServiceDescriptor,
};
use serde_json::{Map, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use super::{ClientError, Connection};
use crate::api::pb;

fn dyn_err(msg: impl Into<String>) -> ClientError {
    ClientError::Dynamic(msg.into())
}

/// A service's schema: its descriptor pool and the service itself.
#[derive(Clone, Debug)]
pub struct Schema {
    pool: DescriptorPool,
    service: ServiceDescriptor,
}

/// The schema compiled into this binary (for rendering typed responses).
pub fn embedded_schema() -> Result<Schema, ClientError> {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
        .map_err(|e| dyn_err(format!("embedded descriptor is damaged: {e}")))?;
    Schema::new(pool, pb::SERVICE)
}

/// Asks the daemon for `service`'s schema through server reflection (grpc.reflection.v1).
pub async fn fetch_schema(conn: &Connection, service: &str) -> Result<Schema, ClientError> {
    let mut client =
        ServerReflectionClient::with_interceptor(conn.channel.clone(), conn.auth.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(service.to_string())),
    };
    let mut stream = client
        .server_reflection_info(futures_util::stream::iter([req]))
        .await?
        .into_inner();
    let resp = stream
        .message()
        .await?
        .ok_or_else(|| dyn_err("the daemon's reflection service sent no answer"))?;
    let files = match resp.message_response {
        Some(MessageResponse::FileDescriptorResponse(f)) => f.file_descriptor_proto,
        Some(MessageResponse::ErrorResponse(e)) => {
            return Err(dyn_err(format!(
                "the daemon does not know `{service}`: {}",
                e.error_message
            )))
        }
        _ => return Err(dyn_err("unexpected answer from the reflection service")),
    };
    let file = files
        .iter()
        .map(|b| FileDescriptorProto::decode(b.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| dyn_err(format!("reflection sent a damaged descriptor: {e}")))?;
    let pool = DescriptorPool::from_file_descriptor_set(FileDescriptorSet { file })
        .map_err(|e| dyn_err(format!("reflection sent an incomplete schema: {e}")))?;
    Schema::new(pool, service)
}

/// One RPC as `nexus ctl help` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MethodInfo {
    pub name: String,
    pub input: String,
    pub output: String,
    pub server_streaming: bool,
    /// `name: type` of every request field.
    pub fields: Vec<String>,
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => m.name().to_string(),
        Kind::Enum(e) => e.name().to_string(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl Schema {
    fn new(pool: DescriptorPool, service: &str) -> Result<Self, ClientError> {
        let service = pool
            .get_service_by_name(service)
            .ok_or_else(|| dyn_err(format!("the schema has no service `{service}`")))?;
        Ok(Self { pool, service })
    }

    /// Every RPC with its request fields.
    pub fn methods(&self) -> Vec<MethodInfo> {
        self.service
            .methods()
            .map(|m| MethodInfo {
                name: m.name().to_string(),
                input: m.input().full_name().to_string(),
                output: m.output().full_name().to_string(),
                server_streaming: m.is_server_streaming(),
                fields: m
                    .input()
                    .fields()
                    .map(|f| {
                        let list = if f.is_list() { "[]" } else { "" };
                        format!("{}: {list}{}", f.name(), kind_name(&f.kind()))
                    })
                    .collect(),
            })
            .collect()
    }

    /// An RPC by name (`CreateNetwork`, case-insensitive, or its full path).
    pub fn method(&self, name: &str) -> Result<MethodDescriptor, ClientError> {
        let short = name.rsplit(['/', '.']).next().unwrap_or(name);
        self.service
            .methods()
            .find(|m| m.name().eq_ignore_ascii_case(short))
            .ok_or_else(|| {
                let all: Vec<String> = self.service.methods().map(|m| m.name().into()).collect();
                dyn_err(format!(
                    "no RPC named `{name}`; the daemon has: {} (`nexus ctl help` lists their fields)",
                    all.join(", ")
                ))
            })
    }

    /// The message descriptor of a type by full name.
    pub fn message(&self, full_name: &str) -> Option<MessageDescriptor> {
        self.pool.get_message_by_name(full_name)
    }
}

/// Builds a request from `Field=Value` arguments. `a.b=V` sets a nested field. Values are
/// JSON when they parse as JSON, otherwise text; a string field always takes the text as is;
/// a list field takes `a,b,c`; a message with a single list field (`StringList`) takes
/// `a,b,c` for that list.
pub fn build_request(
    desc: &MessageDescriptor,
    args: &[String],
) -> Result<DynamicMessage, ClientError> {
    let mut root = Map::new();
    for arg in args {
        let (path, raw) = arg.split_once('=').ok_or_else(|| {
            dyn_err(format!(
                "`{arg}` is not Field=Value (e.g. name=my-net replicas=3)"
            ))
        })?;
        let parts: Vec<&str> = path.split('.').collect();
        let mut msg = desc.clone();
        let mut obj = &mut root;
        for (i, part) in parts.iter().enumerate() {
            let field = msg
                .get_field_by_name(part)
                .or_else(|| msg.get_field_by_json_name(part))
                .ok_or_else(|| {
                    let names: Vec<String> = msg.fields().map(|f| f.name().into()).collect();
                    dyn_err(format!(
                        "`{}` has no field `{part}`; its fields are: {}",
                        msg.name(),
                        names.join(", ")
                    ))
                })?;
            let key = field.name().to_string();
            if i + 1 == parts.len() {
                obj.insert(key, field_value(&field.kind(), field.is_list(), raw));
                break;
            }
            let Kind::Message(inner) = field.kind() else {
                return Err(dyn_err(format!(
                    "`{part}` is not a message: `{path}` cannot go deeper"
                )));
            };
            let entry = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            obj = entry
                .as_object_mut()
                .ok_or_else(|| dyn_err("internal: not an object"))?;
            msg = inner;
        }
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(desc.clone(), Value::Object(root), &options)
        .map_err(|e| dyn_err(format!("invalid request for {}: {e}", desc.name())))
}

fn field_value(kind: &Kind, list: bool, raw: &str) -> Value {
    let split = |raw: &str| -> Value {
        Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.into())))
                .collect(),
        )
    };
    let json = serde_json::from_str::<Value>(raw).ok();
    match kind {
        Kind::String if !list => Value::String(raw.into()),
        Kind::String if !raw.trim_start().starts_with('[') => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect(),
        ),
        Kind::Message(m) if !list && !raw.trim_start().starts_with('{') => {
            let lists: Vec<_> = m.fields().filter(|f| f.is_list()).collect();
            match (lists.as_slice(), m.fields().len()) {
                ([only], 1) => {
                    let mut obj = Map::new();
                    obj.insert(only.name().into(), field_value(&only.kind(), true, raw));
                    Value::Object(obj)
                }
                _ => json.unwrap_or_else(|| Value::String(raw.into())),
            }
        }
        _ if list && !raw.trim_start().starts_with('[') => split(raw),
        _ => json.unwrap_or_else(|| Value::String(raw.into())),
    }
}

/// proto3 JSON with proto field names and every field shown (zeros included).
pub fn to_json(msg: &DynamicMessage) -> Value {
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_proto_field_name(true)
        .skip_default_fields(false);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap_or(Value::Null)
}

/// A typed message rendered like [`to_json`], through its descriptor in `schema`.
pub fn typed_to_json<M: Message>(schema: &Schema, full_name: &str, msg: &M) -> Value {
    match schema.message(full_name) {
        Some(desc) => match DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()) {
            Ok(d) => to_json(&d),
            Err(_) => Value::Null,
        },
        None => Value::Null,
    }
}

/// Encodes/decodes [`DynamicMessage`]s of a given output type.
#[derive(Clone)]
pub struct DynamicCodec {
    output: MessageDescriptor,
}

pub struct DynEncoder;
pub struct DynDecoder(MessageDescriptor);

impl Encoder for DynEncoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode request: {e}")))
    }
}

impl Decoder for DynDecoder {
    type Item = DynamicMessage;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode answer: {e}")))
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynEncoder;
    type Decoder = DynDecoder;
    fn encoder(&mut self) -> DynEncoder {
        DynEncoder
    }
    fn decoder(&mut self) -> DynDecoder {
        DynDecoder(self.output.clone())
    }
}

/// Calls `method` with `request`; every answer (one, or each streamed one) goes to `each`.
pub async fn call(
    conn: &Connection,
    method: &MethodDescriptor,
    request: DynamicMessage,
    mut each: impl FnMut(DynamicMessage),
) -> Result<(), ClientError> {
    use tonic::service::Interceptor;
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = hyper::http::uri::PathAndQuery::try_from(path)
        .map_err(|e| dyn_err(format!("bad method path: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(conn.channel.clone());
    grpc.ready().await.map_err(|e| ClientError::Unreachable {
        address: conn.address.clone(),
        detail: super::error_chain(&e),
    })?;
    let (metadata, extensions, _) = conn
        .auth
        .clone()
        .call(tonic::Request::new(()))?
        .into_parts();
    let req = tonic::Request::from_parts(metadata, extensions, request);
    let codec = DynamicCodec {
        output: method.output(),
    };
    if method.is_server_streaming() {
        let mut stream = grpc.server_streaming(req, path, codec).await?.into_inner();
        while let Some(msg) = stream.message().await? {
            each(msg);
        }
    } else {
        each(grpc.unary(req, path, codec).await?.into_inner());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_become_requests() {
        let schema = embedded_schema().unwrap();
        let m = schema.method("createnetwork").unwrap();
        let args = [
            "name=42".to_string(),
            "replicas=3".into(),
            "users=alice,bob".into(),
            "resources.cpu_millis=500".into(),
            "resources.memory_bytes=1073741824".into(),
            "gateway_public=true".into(),
        ];
        let req = build_request(&m.input(), &args).unwrap();
        let json = to_json(&req);
        assert_eq!(json["name"], "42");
        assert_eq!(json["replicas"], 3);
        assert_eq!(json["users"], serde_json::json!(["alice", "bob"]));
        assert_eq!(json["resources"]["cpu_millis"], 500);
        assert_eq!(json["resources"]["memory_bytes"], 1073741824u64);
        assert_eq!(json["gateway_public"], true);

        let up = schema.method("UpdateNetwork").unwrap();
        let req = build_request(&up.input(), &["name=n".into(), "users=".into()]).unwrap();
        assert_eq!(to_json(&req)["users"], serde_json::json!({"values": []}));
        let req = build_request(&up.input(), &["users=a,b".into()]).unwrap();
        assert_eq!(
            to_json(&req)["users"]["values"],
            serde_json::json!(["a", "b"])
        );

        for bad in ["nme=x", "replicas=many", "noequals", "name.x=1"] {
            let err = build_request(&m.input(), &[bad.to_string()]).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        assert!(schema
            .method("Nope")
            .unwrap_err()
            .to_string()
            .contains("CreateNetwork"));
    }

    #[test]
    fn every_rpc_is_listed() {
        let names: Vec<String> = embedded_schema()
            .unwrap()
            .methods()
            .into_iter()
            .map(|m| m.name)
            .collect();
        for rpc in [
            "Ping",
            "Version",
            "CreateNetwork",
            "StartNetwork",
            "UpdateNetwork",
            "StopNetwork",
            "RemoveNetwork",
            "GetNetwork",
            "ListNetworks",
            "NetworkStats",
            "NetworkDiagnostics",
            "GetJoinKit",
            "WatchEvents",
        ] {
            assert!(names.iter().any(|n| n == rpc), "{rpc}");
        }
    }
}
