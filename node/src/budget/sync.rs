//! Keeping local accounts and the Raft ledger in step, off the request path except for refills: grants
//! (answered, or picked up from the applied ledger when the answer was lost), use reports, releases.
//!
//! Every message is a running total of one incarnation (`LocalAccount`), so a write that timed out may
//! simply be sent again: the ledger applies a total once however often it arrives, and a grant that
//! committed after this node stopped waiting shows up in the applied state, where the next tick finds it.

use std::sync::Arc;

use tollgate_consensus::{ClusterError, Command, ControlState, Request, Response};

use super::{BudgetManager, LocalAccount};
use crate::error::{GatewayError, GatewayResult};

impl BudgetManager {
    /// Asks the ledger for at least `needed` more (a chunk sized to recent use, capped so one node
    /// cannot hoard what others need). Bounded by `grant_timeout`.
    pub(super) async fn refill(&self, account: &Arc<LocalAccount>, needed: u64) -> GatewayResult<()> {
        let _guard = match tokio::time::timeout(self.config.grant_timeout, account.grant_lock.lock()).await {
            Ok(guard) => guard,
            Err(_) => return Err(GatewayError::budget_unavailable("timed out waiting for a budget grant")),
        };
        let shortfall = needed as i64 - account.available();
        if shortfall <= 0 {
            return Ok(()); // another request refilled it meanwhile
        }
        let amount = self.chunk_size(account).max(shortfall as u64);
        match self.grant(account, amount, shortfall as u64).await {
            Ok(()) => Ok(()),
            Err(ClusterError::NoQuorum(reason)) | Err(ClusterError::Internal(reason)) => {
                Err(GatewayError::budget_unavailable(&format!("budget authority unreachable: {reason}")))
            }
            Err(err) => Err(GatewayError::budget_unavailable(&err.to_string())),
        }
    }

    fn chunk_size(&self, account: &LocalAccount) -> u64 {
        let recent = account.take_recent();
        let ledger = account.ledger_available.load(std::sync::atomic::Ordering::Relaxed);
        let ledger = if ledger == u64::MAX { account.spec().limit_units().unwrap_or(0) } else { ledger };
        // ~10 s of recent use, at least the minimum, at most remaining / (2N) (strict near exhaustion).
        let nodes = self.consensus.member_count().max(1);
        let rate_chunk = recent.saturating_mul(10).max(self.config.min_chunk);
        rate_chunk.min(ledger / (2 * nodes))
    }

    fn request(&self, command: Command) -> Request {
        Request {
            request_id: crate::command::new_request_id(),
            actor: format!("node-{}", self.node_id),
            at_ms: self.consensus.now_ms(),
            command,
        }
    }

    /// Tells the ledger this node's clock at start and once per hour (at most one write an hour): a new
    /// budget period opens only when most nodes' clocks are in it, so a leader with a skewed clock cannot
    /// open one alone. Retried next tick when the write fails.
    async fn report_clock(&self) {
        let now = self.consensus.now_ms();
        let hour = tollgate_consensus::Period::Hour.start_ms(now);
        if self.clock_reported_hour.load(std::sync::atomic::Ordering::Relaxed) == hour {
            return;
        }
        let request = self.request(Command::ReportClock { node: self.node_id, node_ms: now });
        if let Ok(Ok(_)) = tokio::time::timeout(self.config.grant_timeout, self.consensus.write(request)).await {
            self.clock_reported_hour.store(hour, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Bills what this node's previous processes still hold in the ledger (DESIGN §6: after a crash
    /// without a clean shutdown, the unreported rest of a grant counts as spent). A process killed with
    /// requests in flight never reported what the upstream served them: only its grant bounded it. So
    /// each incarnation of this node below this process's first one (see `process_floor`) that still
    /// holds allowance gets its whole grant net of releases reported as used — billed ≥ served (S3).
    /// Nothing changes for S1/S2: the allowance was already counted as outstanding. Checked every tick,
    /// so a grant of a previous life that commits late (proposed just before the crash) is billed too.
    /// A clock that went back across the restart by more than the previous life lasted hides that life's
    /// incarnations: they stay held (counted as spent, not billed), as before.
    async fn bill_previous_lives(&self) {
        let state = self.consensus.current();
        let mut due = Vec::new();
        for (scope_id, periods) in state.config.ledger.accounts.iter() {
            for (period_start, account) in periods.iter() {
                let Some(incarnations) = account.incarnations.get(&self.node_id) else { continue };
                for (incarnation, totals) in incarnations.range(..self.process_floor) {
                    if totals.held() > 0 {
                        due.push((
                            scope_id.clone(),
                            *period_start,
                            *incarnation,
                            totals.granted.saturating_sub(totals.released),
                        ));
                    }
                }
            }
        }
        for (scope_id, period_start, incarnation, used_total) in due {
            tracing::info!(
                scope = %scope_id,
                incarnation,
                used_total,
                "billing what a previous process of this node held (it stopped without reporting)"
            );
            let request = self.request(Command::ReportUsedTotal {
                scope_id,
                period_start,
                node: self.node_id,
                incarnation,
                used_total,
            });
            // Not confirmed: the next tick finds it still held and sends it again (a total: safe).
            let _ = tokio::time::timeout(self.config.grant_timeout, self.consensus.write(request)).await;
        }
    }

    /// One grant for `account`'s incarnation. An error is indeterminate: the grant may still commit, and
    /// then the next tick finds it in the applied ledger.
    async fn grant(&self, account: &Arc<LocalAccount>, amount: u64, min_amount: u64) -> Result<(), ClusterError> {
        let request = self.request(Command::GrantForIncarnation {
            scope_id: account.scope_id.clone(),
            period_start: account.period_start,
            node: self.node_id,
            incarnation: account.incarnation,
            amount,
            min_amount,
            node_ms: self.consensus.now_ms(),
        });
        let write = tokio::time::timeout(self.config.grant_timeout, self.consensus.write(request));
        match write.await {
            Ok(Ok(Response::Granted { available, node_total, .. })) => {
                account.ledger_available.store(available, std::sync::atomic::Ordering::Relaxed);
                self.observe_granted_total(account, node_total);
                Ok(())
            }
            Ok(Ok(Response::Rejected { reason })) => {
                tracing::warn!(scope = %account.scope_id, %reason, "budget grant rejected");
                Err(ClusterError::Invalid(reason))
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err),
            Err(_) => {
                Err(ClusterError::NoQuorum("grant timed out (it may still commit; the next sync finds it)".into()))
            }
        }
    }

    /// Adds what the ledger says this incarnation was granted. A total below what this node already saw
    /// means the ledger's account was reset under it (the budget was deleted and created again): the old
    /// account drains and a new incarnation takes over.
    fn observe_granted_total(&self, account: &Arc<LocalAccount>, total: u64) {
        if total < account.granted_total() {
            tracing::warn!(scope = %account.scope_id, "the ledger account was reset; starting a new local account");
            let mut accounts = self.accounts.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            let spec = account.spec();
            let key = (account.scope_id.clone(), account.period_start, spec.period);
            if accounts.get(&key).is_some_and(|current| Arc::ptr_eq(current, account)) {
                account.start_draining();
                self.draining.lock().unwrap_or_else(|p| p.into_inner()).push(account.clone());
                let fresh = self.new_account(&key, &spec);
                accounts.insert(key, fresh);
            }
            return;
        }
        account.observe_granted_total(total);
    }

    pub(super) fn spawn_background(self: &Arc<Self>) {
        crate::background::every(self, self.config.report_interval, |manager| async move { manager.tick().await });
    }

    /// Syncs every account; releases idle or expired allowance; forgets accounts with nothing left to tell.
    async fn tick(&self) {
        self.report_clock().await;
        self.bill_previous_lives().await;
        let current: Vec<Arc<LocalAccount>> =
            self.accounts.read().map(|accounts| accounts.values().cloned().collect()).unwrap_or_default();
        let now = self.consensus.now_ms();
        for account in &current {
            let expired = account.period_end.is_some_and(|end| now >= end);
            if expired || account.idle_for() >= self.config.idle_release_after {
                // Under the grant lock, so a refill in flight is not undone by its own release.
                if let Ok(_guard) = account.grant_lock.try_lock() {
                    account.release_unreserved();
                }
            }
            self.sync_account(account).await;
            // Kept until its use is reported: dropping it earlier would forgive that use (and any overrun).
            if expired && account.available() <= 0 && account.is_settled() {
                if let Ok(mut map) = self.accounts.write() {
                    map.retain(|_, held| !Arc::ptr_eq(held, account));
                }
            }
        }
        let draining: Vec<Arc<LocalAccount>> = self.draining.lock().map(|d| d.clone()).unwrap_or_default();
        for account in &draining {
            self.sync_account(account).await;
        }
        if let Ok(mut draining) = self.draining.lock() {
            draining.retain(|account| !account.is_settled());
        }
    }

    /// Picks up grants the applied ledger shows (answers that were lost), then reports use and sends
    /// releases that the ledger has not confirmed.
    pub(super) async fn sync_account(&self, account: &Arc<LocalAccount>) {
        let state = self.consensus.current();
        if let Some(total) = self.applied_granted_total(&state, account) {
            account.observe_granted_total(total);
        }
        if let Some(used_total) = account.report_due() {
            let request = self.request(Command::ReportUsedTotal {
                scope_id: account.scope_id.clone(),
                period_start: account.period_start,
                node: self.node_id,
                incarnation: account.incarnation,
                used_total,
            });
            if matches!(self.consensus.write(request).await, Ok(Response::Applied { .. })) {
                account.confirm_report(used_total);
            }
        }
        if let Some(released_total) = account.release_due() {
            let request = self.request(Command::ReleaseUpTo {
                scope_id: account.scope_id.clone(),
                period_start: account.period_start,
                node: self.node_id,
                incarnation: account.incarnation,
                released_total,
            });
            // Not confirmed: sent again next tick (the total makes that safe). The allowance is never
            // spendable here again either way.
            if matches!(self.consensus.write(request).await, Ok(Response::Applied { .. })) {
                account.confirm_release(released_total);
            }
        }
    }

    /// This incarnation's granted total in the applied ledger, when its account is there.
    fn applied_granted_total(&self, state: &ControlState, account: &LocalAccount) -> Option<u64> {
        let ledger_account = state.config.ledger.accounts.get(&account.scope_id)?.get(&account.period_start)?;
        // Only an incarnation the applied state knows: it may lag a grant this node was just answered (the
        // answer, from the leader, is what detects a reset ledger account).
        ledger_account.incarnations.get(&self.node_id)?.get(&account.incarnation).map(|totals| totals.granted)
    }

    /// On clean shutdown: hand back what is not reserved and report what was used.
    pub async fn flush(&self) {
        let mut accounts: Vec<Arc<LocalAccount>> =
            self.accounts.read().map(|accounts| accounts.values().cloned().collect()).unwrap_or_default();
        accounts.extend(self.draining.lock().map(|d| d.clone()).unwrap_or_default());
        for account in &accounts {
            account.release_unreserved();
            self.sync_account(account).await;
        }
    }
}
