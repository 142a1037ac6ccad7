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

/// What a command got back: the JSON (printed with `--json`) and, for people, a table or summary.
struct Answer {
    json: Value,
    text: Option<String>,
}

impl Answer {
    fn json(json: Value) -> Answer {
        Answer { json, text: None }
    }

    fn with_text(json: Value, text: impl FnOnce(&Value) -> String) -> Answer {
        let text = Some(text(&json));
        Answer { json, text }
    }
}

pub async fn run(args: AdminArgs, command: AdminCommand) -> anyhow::Result<()> {
    let client = AdminClient::new(&args.admin, args.token.clone());
    let answer = match command {
        AdminCommand::Status => {
            let status = client.call(Method::GET, "/admin/v1/cluster", None).await?;
            Answer::with_text(status, status_table)
        }
        AdminCommand::Apply { file, dry_run } => apply(&client, &file, dry_run).await?,
        AdminCommand::Keys(command) => keys(&client, command).await?,
        AdminCommand::Orgs(command) => named(&client, "orgs", command, &["name", "budget"]).await?,
        AdminCommand::Teams(command) => named(&client, "teams", command, &["org", "name"]).await?,
        AdminCommand::Guardrails(command) => {
            named(&client, "guardrails", command, &["name", "kind", "action", "threshold", "entities"]).await?
        }
        AdminCommand::Routes(command) => named(&client, "routes", command, &["name", "strategy", "targets"]).await?,
        AdminCommand::Budgets(command) => budgets(&client, command).await?,
        AdminCommand::Usage { org, since, until, group_by } => {
            let path = with_query(
                "/admin/v1/usage",
                &[("org", Some(org)), ("since", since), ("until", until), ("group_by", group_by.clone())],
            );
            let report = client.call(Method::GET, &path, None).await?;
            Answer::with_text(report, |report| usage_table(report, group_by.as_deref()))
        }
        AdminCommand::Cluster(command) => cluster(&client, command).await?,
    };
    match answer.text {
        Some(text) if !args.json => print(&text),
        _ => {
            println!("{}", serde_json::to_string_pretty(&answer.json)?);
            Ok(())
        }
    }
}

/// `path?name=value&…` for the parameters that are set, each value percent-encoded.
fn with_query(path: &str, parameters: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in parameters {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// One path segment, percent-encoded (a name may hold `/`, `?` or spaces).
/// A name as path segments: each part percent-encoded, `/` kept (teams are `ORG/TEAM`).
fn segment(name: &str) -> String {
    name.split('/')
        .map(|part| form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>().replace('+', "%20"))
        .collect::<Vec<_>>()
        .join("/")
}

fn body(value: &Value) -> Option<Bytes> {
    Some(Bytes::from(value.to_string()))
}

async fn apply(client: &AdminClient, file: &std::path::Path, dry_run: bool) -> anyhow::Result<Answer> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let path = if dry_run { "/admin/v1/apply?dry_run=true" } else { "/admin/v1/apply" };
    let result = client.call(Method::POST, path, Some(Bytes::from(text))).await?;
    Ok(Answer::with_text(result, |result| {
        let changes = result["changes"].as_array().cloned().unwrap_or_default();
        let mut out = format!("{}: {} change(s)\n", result["result"].as_str().unwrap_or("done"), changes.len());
        for change in changes {
            let _ = writeln!(out, "  {}", change.as_str().unwrap_or_default());
        }
        out
    }))
}

async fn keys(client: &AdminClient, command: KeysCommand) -> anyhow::Result<Answer> {
    match command {
        KeysCommand::Create { org, team, name, models } => {
            let models: Option<Vec<String>> =
                models.map(|m| m.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect());
            let request = json!({"org": org, "team": team, "name": name, "models": models});
            let created = client.call(Method::POST, "/admin/v1/keys", body(&request)).await?;
            Ok(Answer::with_text(created, |created| {
                format!(
                    "key id: {}\nkey:    {}\n(the key is shown once; only its hash is stored)\n",
                    created["id"].as_str().unwrap_or_default(),
                    created["key"].as_str().unwrap_or_default()
                )
            }))
        }
        KeysCommand::List { org } => {
            let mut keys = client.call(Method::GET, "/admin/v1/keys", None).await?;
            if let (Some(org), Some(list)) = (org, keys["data"].as_array_mut()) {
                list.retain(|k| k["org"] == org.as_str());
            }
            Ok(Answer::with_text(keys, |keys| table(&keys["data"], &["id", "name", "org", "team", "models"])))
        }
        KeysCommand::Revoke { id } => {
            Ok(Answer::json(client.call(Method::DELETE, &format!("/admin/v1/keys/{}", segment(&id)), None).await?))
        }
    }
}

async fn budgets(client: &AdminClient, command: BudgetsCommand) -> anyhow::Result<Answer> {
    match command {
        BudgetsCommand::Set { scope, limit_tokens, limit_cost, period } => {
            let request = json!({
                "scope": {"org": scope.org, "team": scope.team, "key_id": scope.key_id},
                "limit_tokens": limit_tokens, "limit_cost": limit_cost, "period": period,
            });
            Ok(Answer::json(client.call(Method::PUT, "/admin/v1/budgets", body(&request)).await?))
        }
        BudgetsCommand::Get { org, team, key_id } => {
            let path = with_query("/admin/v1/budgets", &[("org", org), ("team", team), ("key_id", key_id)]);
            let budgets = client.call(Method::GET, &path, None).await?;
            Ok(Answer::with_text(budgets, |budgets| {
                let rows = if budgets["data"].is_array() { budgets["data"].clone() } else { json!([budgets]) };
                table(&rows, &["scope_id", "period", "unit", "limit", "used", "held", "remaining"])
            }))
        }
        BudgetsCommand::Delete { scope } => {
            let parameters = [("org", Some(scope.org)), ("team", scope.team), ("key_id", scope.key_id)];
            Ok(Answer::json(client.call(Method::DELETE, &with_query("/admin/v1/budgets", &parameters), None).await?))
        }
    }
}

fn usage_table(report: &Value, group_by: Option<&str>) -> String {
    let mut columns = Vec::new();
    for dimension in group_by.unwrap_or("").split(',').map(str::trim) {
        match dimension {
            "team" => columns.push("team"),
            "key" => columns.push("key_id"),
            "model" => columns.push("model"),
            _ => {}
        }
    }
    columns.extend(["requests", "input_tokens", "output_tokens", "cost_usd"]);
    table(&report["rows"], &columns)
}

async fn cluster(client: &AdminClient, command: ClusterCommand) -> anyhow::Result<Answer> {
    let status = match command {
        ClusterCommand::AddNode { id, raft_addr, api_addr, admin_addr } => {
            let request = json!({
                "id": id, "raft_addr": raft_addr,
                "api_addr": api_addr.unwrap_or_default(), "admin_addr": admin_addr.unwrap_or_default(),
            });
            client.call(Method::POST, "/admin/v1/cluster/nodes", body(&request)).await?
        }
        ClusterCommand::RemoveNode { id } => {
            client.call(Method::DELETE, &format!("/admin/v1/cluster/nodes/{id}"), None).await?
        }
    };
    Ok(Answer::with_text(status, status_table))
}

async fn named(client: &AdminClient, kind: &str, command: NamedCommand, columns: &[&str]) -> anyhow::Result<Answer> {
    Ok(match command {
        NamedCommand::List => {
            let list = client.call(Method::GET, &format!("/admin/v1/{kind}"), None).await?;
            Answer::with_text(list, |list| table(&list["data"], columns))
        }
        NamedCommand::Get { name } => {
            Answer::json(client.call(Method::GET, &format!("/admin/v1/{kind}/{}", segment(&name)), None).await?)
        }
        NamedCommand::Put { name, body } => {
            let body = body.unwrap_or_else(|| "{}".into());
            serde_json::from_str::<Value>(&body).context("--body must be a JSON object")?;
            let path = format!("/admin/v1/{kind}/{}", segment(&name));
            Answer::json(client.call(Method::PUT, &path, Some(Bytes::from(body))).await?)
        }
        NamedCommand::Delete { name } => {
            Answer::json(client.call(Method::DELETE, &format!("/admin/v1/{kind}/{}", segment(&name)), None).await?)
        }
    })
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

#[cfg(test)]
mod tests {
    use super::{segment, with_query};

    #[test]
    fn query_values_and_names_are_percent_encoded() {
        let path = with_query("/admin/v1/budgets", &[("org", Some("a&b c".into())), ("team", None)]);
        assert_eq!(path, "/admin/v1/budgets?org=a%26b+c");
        assert_eq!(
            with_query("/x", &[("since", Some("2026-01-01T00:00:00+02:00".into()))]),
            "/x?since=2026-01-01T00%3A00%3A00%2B02%3A00"
        );
        assert_eq!(with_query("/x", &[("org", None)]), "/x");
        // `/` separates segments (teams are ORG/TEAM; the server takes the rest of the path as the name).
        assert_eq!(segment("eu west/1?"), "eu%20west/1%3F");
    }
}
