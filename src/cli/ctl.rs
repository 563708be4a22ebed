//! `nexus ctl`: any RPC by name, from the schema the daemon serves through reflection.

use anyhow::Result;
use nexus::api::pb;
use nexus::client::dynamic::{build_request, call, fetch_schema, to_json, Schema};
use nexus::client::{self, Connection};

use super::{render, settings, Global};

async fn schema(conn: &Connection) -> Result<Schema> {
    Ok(fetch_schema(conn, pb::SERVICE).await?)
}

fn help(schema: &Schema, method: Option<&str>, json: bool) -> Result<()> {
    let mut methods = schema.methods();
    if let Some(m) = method {
        let wanted = schema.method(m)?;
        methods.retain(|x| x.name == wanted.name());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&methods)?);
        return Ok(());
    }
    let mut rows = vec![vec!["RPC".into(), "FIELDS".into(), "ANSWER".into()]];
    for m in &methods {
        let answer = if m.server_streaming {
            format!("stream {}", m.output)
        } else {
            m.output.clone()
        };
        rows.push(vec![
            m.name.clone(),
            if m.fields.is_empty() {
                "-".into()
            } else {
                m.fields.join(", ")
            },
            answer,
        ]);
    }
    render::table(&rows);
    eprintln!(
        "\ncall one with `nexus ctl <RPC> field=value …` (a.b=v for nested fields, a,b for lists)"
    );
    Ok(())
}

pub async fn run(global: &Global, method: &str, fields: &[String], pretty: bool) -> Result<()> {
    let conn = client::connect(&settings::client_config(global)?).await?;
    let schema = schema(&conn).await?;
    if method.eq_ignore_ascii_case("help") {
        return help(&schema, fields.first().map(String::as_str), global.json);
    }
    let m = schema.method(method)?;
    let req = build_request(&m.input(), fields)?;
    let print = |msg: prost_reflect::DynamicMessage| {
        let v = to_json(&msg);
        let text = if pretty {
            serde_json::to_string_pretty(&v)
        } else {
            serde_json::to_string(&v)
        };
        if let Ok(t) = text {
            println!("{t}");
        }
    };
    call(&conn, &m, req, print).await.map_err(|e| match e {
        client::ClientError::Status(s) => anyhow::anyhow!("{} ({:?})", s.message(), s.code()),
        other => other.into(),
    })
}
