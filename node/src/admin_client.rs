//! The admin CLI commands (`tollgate status`, `apply`, `keys`, `orgs`, `routes`, `cluster`): a small HTTP
//! client for `/admin/v1` that prints tables for people and JSON for scripts.

use std::fmt::Write as _;

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::cli::{AdminArgs, AdminCommand, BudgetsCommand, ClusterCommand, KeysCommand, NamedCommand};

pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a request; a non-2xx answer becomes an error with the server's message.
    pub async fn call(&self, method: Method, path: &str, body: Option<Bytes>) -> anyhow::Result<Value> {
        let mut builder = Request::builder().method(method.clone()).uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = builder.body(Full::new(body.unwrap_or_default()))?;
        let response = tokio::time::timeout(std::time::Duration::from_secs(60), self.client.request(request))
            .await
            .context("the admin API did not answer within 60 s")?
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        if !status.is_success() {
            let message = value["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            bail!("{method} {path} failed with HTTP {}: {message}", status.as_u16());
        }
        Ok(value)
    }
}

pub async fn run(args: AdminArgs, command: AdminCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.admin, args.token.clone());
    let json_output = args.json;
    let output = match command {
        AdminCommand::Status => {
            let status = client.call(Method::GET, "/admin/v1/cluster", None).await?;
            if json_output {
                status
            } else {
                return print(&status_table(&status));
            }
        }
        AdminCommand::Apply { file, dry_run } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = if dry_run { "/admin/v1/apply?dry_run=true" } else { "/admin/v1/apply" };
            let result = client.call(Method::POST, path, Some(Bytes::from(text))).await?;
            if json_output {
                result
            } else {
                let changes = result["changes"].as_array().cloned().unwrap_or_default();
                let mut out = format!("{}: {} change(s)\n", result["result"].as_str().unwrap_or("done"), changes.len());
                for change in changes {
                    let _ = writeln!(out, "  {}", change.as_str().unwrap_or_default());
                }
                return print(&out);
            }
        }
        AdminCommand::Keys(KeysCommand::Create { org, team, name, models }) => {
            let models: Option<Vec<String>> =
                models.map(|m| m.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect());
            let body = json!({"org": org, "team": team, "name": name, "models": models});
            let created = client.call(Method::POST, "/admin/v1/keys", Some(Bytes::from(body.to_string()))).await?;
            if json_output {
                created
            } else {
                return print(&format!(
                    "key id: {}\nkey:    {}\n(the key is shown once; only its hash is stored)\n",
                    created["id"].as_str().unwrap_or_default(),
                    created["key"].as_str().unwrap_or_default()
                ));
            }
        }
        AdminCommand::Keys(KeysCommand::List { org }) => {
            let mut keys = client.call(Method::GET, "/admin/v1/keys", None).await?;
            if let (Some(org), Some(list)) = (org, keys["data"].as_array_mut()) {
                list.retain(|k| k["org"] == org.as_str());
            }
            if json_output {
                keys
            } else {
                return print(&table(&keys["data"], &["id", "name", "org", "team", "models"]));
            }
        }
        AdminCommand::Keys(KeysCommand::Revoke { id }) => {
            client.call(Method::DELETE, &format!("/admin/v1/keys/{id}"), None).await?
        }
        AdminCommand::Orgs(command) => match named(&client, "orgs", command, json_output, &["name", "budget"]).await? {
            Some(value) => value,
            None => return Ok(()),
        },
        AdminCommand::Routes(command) => {
            match named(&client, "routes", command, json_output, &["name", "strategy", "targets"]).await? {
                Some(value) => value,
                None => return Ok(()),
            }
        }
        AdminCommand::Budgets(BudgetsCommand::Set { scope, limit_tokens, limit_cost, period }) => {
            let body = json!({
                "scope": {"org": scope.org, "team": scope.team, "key_id": scope.key_id},
                "limit_tokens": limit_tokens, "limit_cost": limit_cost, "period": period,
            });
            client.call(Method::PUT, "/admin/v1/budgets", Some(Bytes::from(body.to_string()))).await?
        }
        AdminCommand::Budgets(BudgetsCommand::Get { org, team, key_id }) => {
            let mut query = Vec::new();
            for (name, value) in [("org", org), ("team", team), ("key_id", key_id)] {
                if let Some(value) = value {
                    query.push(format!("{name}={value}"));
                }
            }
            let path = if query.is_empty() {
                "/admin/v1/budgets".to_owned()
            } else {
                format!("/admin/v1/budgets?{}", query.join("&"))
            };
            let budgets = client.call(Method::GET, &path, None).await?;
            if json_output {
                budgets
            } else {
                let rows = if budgets["data"].is_array() { budgets["data"].clone() } else { json!([budgets]) };
                return print(&table(&rows, &["scope_id", "period", "unit", "limit", "used", "held", "remaining"]));
            }
        }
        AdminCommand::Budgets(BudgetsCommand::Delete { scope }) => {
            let mut path = format!("/admin/v1/budgets?org={}", scope.org);
            if let Some(team) = scope.team {
                path.push_str(&format!("&team={team}"));
            }
            if let Some(key) = scope.key_id {
                path.push_str(&format!("&key_id={key}"));
            }
            client.call(Method::DELETE, &path, None).await?
        }
        AdminCommand::Usage { org, since, until, group_by } => {
            let mut path = format!("/admin/v1/usage?org={org}");
            for (name, value) in [("since", since), ("until", until), ("group_by", group_by.clone())] {
                if let Some(value) = value {
                    path.push_str(&format!("&{name}={}", value.replace('+', "%2B")));
                }
            }
            let report = client.call(Method::GET, &path, None).await?;
            if json_output {
                report
            } else {
                let mut columns = Vec::new();
                for dimension in group_by.as_deref().unwrap_or("").split(',').map(str::trim) {
                    match dimension {
                        "team" => columns.push("team"),
                        "key" => columns.push("key_id"),
                        "model" => columns.push("model"),
                        _ => {}
                    }
                }
                columns.extend(["requests", "input_tokens", "output_tokens", "cost_usd"]);
                return print(&table(&report["rows"], &columns));
            }
        }
        AdminCommand::Cluster(ClusterCommand::AddNode { id, raft_addr, api_addr, admin_addr }) => {
            let body = json!({"id": id, "raft_addr": raft_addr, "api_addr": api_addr.unwrap_or_default(), "admin_addr": admin_addr.unwrap_or_default()});
            let status =
                client.call(Method::POST, "/admin/v1/cluster/nodes", Some(Bytes::from(body.to_string()))).await?;
            if json_output {
                status
            } else {
                return print(&status_table(&status));
            }
        }
        AdminCommand::Cluster(ClusterCommand::RemoveNode { id }) => {
            let status = client.call(Method::DELETE, &format!("/admin/v1/cluster/nodes/{id}"), None).await?;
            if json_output {
                status
            } else {
                return print(&status_table(&status));
            }
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// `None` when the answer was already printed as a table.
async fn named(
    client: &AdminClient,
    kind: &str,
    command: NamedCommand,
    json_output: bool,
    columns: &[&str],
) -> anyhow::Result<Option<Value>> {
    let value = match command {
        NamedCommand::List => {
            let list = client.call(Method::GET, &format!("/admin/v1/{kind}"), None).await?;
            if !json_output {
                print(&table(&list["data"], columns))?;
                return Ok(None);
            }
            list
        }
        NamedCommand::Get { name } => client.call(Method::GET, &format!("/admin/v1/{kind}/{name}"), None).await?,
        NamedCommand::Put { name, body } => {
            let body = body.unwrap_or_else(|| "{}".into());
            serde_json::from_str::<Value>(&body).context("--body must be a JSON object")?;
            client.call(Method::PUT, &format!("/admin/v1/{kind}/{name}"), Some(Bytes::from(body))).await?
        }
        NamedCommand::Delete { name } => client.call(Method::DELETE, &format!("/admin/v1/{kind}/{name}"), None).await?,
    };
    Ok(Some(value))
}

fn print(text: &str) -> anyhow::Result<()> {
    print!("{text}");
    Ok(())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(map) => map
                    .get("provider")
                    .map(|p| {
                        format!(
                            "{}/{}",
                            p.as_str().unwrap_or(""),
                            map.get("model").and_then(Value::as_str).unwrap_or("*")
                        )
                    })
                    .unwrap_or_else(|| item.to_string()),
                other => cell(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// A plain aligned table of `columns` from a JSON array of objects.
pub fn table(rows: &Value, columns: &[&str]) -> String {
    let rows: Vec<Vec<String>> = rows
        .as_array()
        .map(|rows| rows.iter().map(|row| columns.iter().map(|c| cell(&row[*c])).collect()).collect())
        .unwrap_or_default();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| rows.iter().map(|r| r[index].len()).max().unwrap_or(0).max(column.len()))
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<String>| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut out, columns.iter().map(|c| c.to_uppercase()).collect());
    for row in rows {
        line(&mut out, row);
    }
    out
}

fn status_table(status: &Value) -> String {
    let mut out = format!(
        "leader: {}   term: {}   answered by node {} (applied index {})\n",
        cell(&status["leader"]),
        cell(&status["term"]),
        cell(&status["node_id"]),
        cell(&status["applied_index"])
    );
    out.push_str(&table(&status["members"], &["id", "role", "raft_addr", "api_addr", "applied_index", "lag", "alive"]));
    out
}
