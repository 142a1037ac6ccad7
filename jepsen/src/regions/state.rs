//! What `up` built, on disk (`DIR/state.json`), so `down` can remove it even after the harness crashed.
//! Written before each resource is created (intent first), rewritten atomically (temp file + rename).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub namespace: String,
    pub ip: String,
    pub api_url: String,
    pub admin_url: String,
    pub pid: Option<u32>,
    pub config: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegionsState {
    pub dir: PathBuf,
    pub bridge: String,
    pub namespace_prefix: String,
    pub subnet: [u8; 3],
    pub tollgate: PathBuf,
    pub proxy_pid: Option<u32>,
    pub proxy_config: PathBuf,
    pub control_socket: PathBuf,
    pub admin_token_file: PathBuf,
    pub key: String,
    pub nodes: Vec<NodeRecord>,
    /// Raft timing and link delay the configs were generated with (for the record).
    pub settings: serde_json::Value,
    /// `TOLLGATE_CLOCK_SKEW_MS` of every node, from its first start and on every restart (0: none): `jepsen
    /// run` shifts the whole cluster's clock this way so that a budget period rolls over mid-run.
    #[serde(default)]
    pub clock_skew_ms: i64,
    /// The slow-disk nemesis's `LD_PRELOAD` shim, preloaded into every node from its first start and on
    /// every restart (`None`: not preloaded). Inert until a node's `nI/slow-disk` control file exists.
    #[serde(default)]
    pub slow_disk_shim: Option<PathBuf>,
}

impl RegionsState {
    /// Node `id`'s slow-disk control file: while it exists and reads "SYNC_MS WRITE_MS", the shim delays
    /// the node's syncs and writes to its data directory.
    pub fn slow_disk_control(&self, id: u64) -> PathBuf {
        self.dir.join(format!("n{id}")).join("slow-disk")
    }

    /// The environment that preloads the slow-disk shim into node `id` (empty without a shim).
    pub fn slow_disk_env(&self, id: u64) -> Vec<(String, String)> {
        let Some(shim) = &self.slow_disk_shim else {
            return Vec::new();
        };
        let data = self.dir.join(format!("n{id}")).join("data");
        vec![
            ("LD_PRELOAD".to_owned(), shim.to_string_lossy().into_owned()),
            ("TOLLGATE_SLOWDISK_DIR".to_owned(), data.to_string_lossy().into_owned()),
            ("TOLLGATE_SLOWDISK_CONTROL".to_owned(), self.slow_disk_control(id).to_string_lossy().into_owned()),
        ]
    }
}

pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

impl RegionsState {
    pub fn load(dir: &Path) -> anyhow::Result<Option<RegionsState>> {
        let path = state_path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a regions state file; remove it by hand", path.display()))?;
        Ok(Some(state))
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let path = state_path(&self.dir);
        let temp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self)?;
        write_private(&temp, &text)?;
        std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Writes a file readable by its owner only (tokens, keys, state naming them).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    Ok(())
}
