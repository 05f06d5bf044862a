//! `tern get`: a small client that asks a server for features and prints a table, so
//! a person can try a server without writing code. `tern health`: asks its gRPC
//! health service, for exec probes and Docker's `HEALTHCHECK`.

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::cli::{ClientTlsArgs, GetArgs, HealthArgs, ServicePath};
use crate::grpc::code_label;
use crate::proto::feast::serving::{FeatureList, FieldStatus, GetOnlineFeaturesResponse};
use crate::proto::feast::types::value::Val;
use crate::proto::feast::types::{RepeatedValue, Value};
use crate::proto::tern::wire::{self, get_online_features_request::Kind};

/// Builds the request `args` describe. Entity columns keep their command-line order
/// (the request is built as repeated entries, the same bytes as Feast's map).
pub fn request(args: &GetArgs) -> anyhow::Result<wire::GetOnlineFeaturesRequest> {
    let mut entities = Vec::with_capacity(args.entities.len());
    for spec in &args.entities {
        let Some((column, values)) = spec.split_once('=') else {
            bail!("--entity {spec:?}: expected join_key=value[,value...], e.g. driver_id=1001");
        };
        let val = values
            .split(',')
            .map(|v| Value {
                val: Some(Val::StringVal(v.to_owned())),
            })
            .collect();
        entities.push(wire::Column {
            key: column.to_owned(),
            value: Some(RepeatedValue { val }),
        });
    }
    let kind = match &args.feature_service {
        Some(name) => Kind::FeatureService(name.clone()),
        None => Kind::Features(FeatureList {
            val: args.features.clone(),
        }),
    };
    Ok(wire::GetOnlineFeaturesRequest {
        kind: Some(kind),
        entities,
        full_feature_names: args.full_feature_names,
        request_context: Vec::new(),
        include_feature_view_version_metadata: args.metadata,
    })
}

/// Sends the request and renders the answer.
pub async fn get(args: &GetArgs) -> anyhow::Result<String> {
    let req = request(args)?;
    let (endpoint, _) = endpoint(&args.addr, &args.tls)?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let route = match args.service {
        ServicePath::Serving => "/feast.serving.ServingService/GetOnlineFeatures",
        ServicePath::FeatureServer => "/GrpcFeatureServer/GetOnlineFeatures",
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .with_context(|| format!("cannot reach {}", args.addr))?;
    let codec = tonic_prost::ProstCodec::<wire::GetOnlineFeaturesRequest, GetOnlineFeaturesResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(route);
    let response = grpc
        .unary(tonic::Request::new(req), path, codec)
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", code_label(s.code()), s.message()))?;
    Ok(render(&response.into_inner(), args.timestamps))
}

/// The endpoint for `addr` (`http://` assumed without a scheme, `https://` when a TLS
/// option is given), with TLS set up from `tls`; and the address as used.
fn endpoint(
    addr: &str,
    tls: &ClientTlsArgs,
) -> anyhow::Result<(tonic::transport::Endpoint, String)> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let addr = match addr.split_once("://") {
        Some(("http", _)) if tls.any() => {
            bail!("--addr {addr} is plaintext but TLS options were given: use https://")
        }
        Some(_) => addr.to_owned(),
        None if tls.any() => format!("https://{addr}"),
        None => format!("http://{addr}"),
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(addr.clone())
        .with_context(|| format!("invalid --addr {addr:?}"))?;
    if addr.starts_with("https://") {
        let read = |path: &std::path::Path, what: &str| {
            std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
        };
        let mut config = ClientTlsConfig::new();
        config = match &tls.tls_ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&tls.tls_cert, &tls.tls_key) {
            config = config.identity(Identity::from_pem(
                read(cert, "--tls-cert")?,
                read(key, "--tls-key")?,
            ));
        }
        if let Some(name) = &tls.tls_server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint
            .tls_config(config)
            .with_context(|| format!("TLS settings for {addr}"))?;
    }
    Ok((endpoint, addr))
}

/// Asks `args.addr`'s `grpc.health.v1.Health/Check` about `args.service`; answers
/// `SERVING`, or fails with a one-line reason (not serving, unknown service, no
/// server, no answer in time). The caller exits 1 on failure: Docker reserves 2.
pub async fn health(args: &HealthArgs) -> anyhow::Result<&'static str> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    let service = &args.service;
    let (endpoint, addr) = endpoint(&args.addr, &args.tls)?;
    let endpoint = endpoint.connect_timeout(timeout);
    let ask = async {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest {
            service: service.clone(),
        };
        match client.check(request).await {
            Ok(answer) => Ok(answer.into_inner().status),
            Err(s) if s.code() == tonic::Code::NotFound => {
                bail!("{addr} has no health service {service:?}")
            }
            Err(s) => bail!("{addr}: {}: {}", code_label(s.code()), s.message()),
        }
    };
    let status = tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {addr} within {} ms", args.timeout_ms))??;
    match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => Ok("SERVING"),
        Ok(other) => bail!(
            "{addr} answers {} for health service {service:?}",
            other.as_str_name()
        ),
        Err(_) => bail!("{addr} answers unknown status {status} for health service {service:?}"),
    }
}

/// Renders a response as an aligned table, one line per entity row.
pub fn render(response: &GetOnlineFeaturesResponse, timestamps: bool) -> String {
    let names: &[String] = response
        .metadata
        .as_ref()
        .and_then(|m| m.feature_names.as_ref())
        .map_or(&[], |l| &l.val);
    let rows = response.results.first().map_or(0, |r| r.values.len());
    let mut table: Vec<Vec<String>> = vec![names.to_vec()];
    for row in 0..rows {
        table.push(
            response
                .results
                .iter()
                .map(|col| {
                    let value = col.values.get(row).map_or_else(String::new, render_value);
                    let status = col.statuses.get(row).copied().unwrap_or_default();
                    let mut cell = match FieldStatus::try_from(status) {
                        Ok(FieldStatus::NotFound) => "<not found>".to_owned(),
                        Ok(FieldStatus::NullValue) => "<null>".to_owned(),
                        Ok(FieldStatus::OutsideMaxAge) => format!("{value} (stale)"),
                        _ => value,
                    };
                    if timestamps
                        && let Some(ts) = col
                            .event_timestamps
                            .get(row)
                            .filter(|t| t.seconds != 0 || t.nanos != 0)
                    {
                        let _ = write!(cell, " @{}", ts.seconds);
                    }
                    cell
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..names.len())
        .map(|c| {
            table
                .iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(meta) = &response.metadata {
        for m in &meta.feature_view_metadata {
            let _ = writeln!(out, "read {} v{}", m.name, m.version);
        }
    }
    out
}

/// One value in a readable form.
pub fn render_value(v: &Value) -> String {
    fn list<T: std::fmt::Display>(items: &[T]) -> String {
        let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
        format!("[{}]", parts.join(", "))
    }
    fn hex(b: &[u8]) -> String {
        let mut s = String::from("0x");
        for byte in b {
            let _ = write!(s, "{byte:02x}");
        }
        s
    }
    let Some(val) = &v.val else {
        return "null".into();
    };
    match val {
        Val::BytesVal(b) => hex(b),
        Val::StringVal(s)
        | Val::JsonVal(s)
        | Val::UuidVal(s)
        | Val::TimeUuidVal(s)
        | Val::DecimalVal(s) => s.clone(),
        Val::Int32Val(x) => x.to_string(),
        Val::Int64Val(x) | Val::UnixTimestampVal(x) => x.to_string(),
        Val::DoubleVal(x) => x.to_string(),
        Val::FloatVal(x) => x.to_string(),
        Val::BoolVal(x) => x.to_string(),
        Val::NullVal(_) => "null".into(),
        Val::BytesListVal(l) => format!(
            "[{}]",
            l.val.iter().map(|b| hex(b)).collect::<Vec<_>>().join(", ")
        ),
        Val::StringListVal(l)
        | Val::JsonListVal(l)
        | Val::UuidListVal(l)
        | Val::TimeUuidListVal(l)
        | Val::DecimalListVal(l) => list(&l.val),
        Val::Int32ListVal(l) => list(&l.val),
        Val::Int64ListVal(l) | Val::UnixTimestampListVal(l) => list(&l.val),
        Val::DoubleListVal(l) => list(&l.val),
        Val::FloatListVal(l) => list(&l.val),
        Val::BoolListVal(l) => list(&l.val),
        Val::StringSetVal(l)
        | Val::UuidSetVal(l)
        | Val::TimeUuidSetVal(l)
        | Val::DecimalSetVal(l) => list(&l.val),
        Val::Int32SetVal(l) => list(&l.val),
        Val::Int64SetVal(l) | Val::UnixTimestampSetVal(l) => list(&l.val),
        Val::DoubleSetVal(l) => list(&l.val),
        Val::FloatSetVal(l) => list(&l.val),
        Val::BoolSetVal(l) => list(&l.val),
        Val::BytesSetVal(l) => format!(
            "[{}]",
            l.val.iter().map(|b| hex(b)).collect::<Vec<_>>().join(", ")
        ),
        Val::ListVal(l) | Val::SetVal(l) => format!(
            "[{}]",
            l.val
                .iter()
                .map(render_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Val::MapVal(m) | Val::StructVal(m) => format!(
            "{{{}}}",
            m.val
                .iter()
                .map(|(k, v)| format!("{k}: {}", render_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Val::MapListVal(l) | Val::StructListVal(l) => format!("<{} maps>", l.val.len()),
        Val::ScalarMapVal(m) => format!("<map of {} entries>", m.val.len()),
        Val::ZonedTimestampVal(z) => format!("{} {}", z.unix_timestamp, z.zone),
    }
}
