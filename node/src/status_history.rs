//! The status page's recent history (request rate, error rate, time to first token), sampled from the
//! metrics by `admin::status` and kept by the gateway.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// One sample every this often; the page shows the last [`KEEP`] samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
const KEEP: usize = 300;

/// Request rate, error rate and mean TTFT per sampling interval, newest last.
#[derive(Default)]
pub struct StatusHistory {
    samples: Mutex<VecDeque<Point>>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Point {
    /// Wall clock, ms.
    pub at_ms: u64,
    pub requests_per_s: f64,
    /// Share of responses that were 5xx or 429, 0 to 1.
    pub error_rate: f64,
    /// Mean time to first token of the interval's answers, ms (none without answers).
    pub ttft_ms: Option<f64>,
}

impl StatusHistory {
    pub fn points(&self) -> Vec<Point> {
        self.samples.lock().map(|samples| samples.iter().copied().collect()).unwrap_or_default()
    }

    pub fn push(&self, point: Point) {
        if let Ok(mut samples) = self.samples.lock() {
            samples.push_back(point);
            while samples.len() > KEEP {
                samples.pop_front();
            }
        }
    }
}
