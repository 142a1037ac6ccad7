//! The mock's GPU side: engine-specific metric names, and the GpuSim queue (latency grows with it).

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::mock_upstream::{Engine, GpuSim, MockUpstream};

async fn metrics(m: &MockUpstream) -> String {
    reqwest::get(m.metrics_url()).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn metrics_use_each_engines_names() {
    let m = MockUpstream::start().await;
    m.set_gpu_metrics(4, 6, 0.25);
    m.set_engine(Engine::Sglang);
    let text = metrics(&m).await;
    assert!(text.contains("sglang:num_queue_reqs{model_name=\"mock-gpt\"} 4.0"), "{text}");
    assert!(text.contains("sglang:num_running_reqs{model_name=\"mock-gpt\"} 6.0"), "{text}");
    assert!(text.contains("sglang:token_usage{model_name=\"mock-gpt\"} 0.25"), "{text}");
    m.set_engine(Engine::Tgi);
    let text = metrics(&m).await;
    assert!(text.contains("tgi_queue_size 4\n") && text.contains("tgi_batch_current_size 6\n"), "{text}");
    assert!(!text.contains("vllm:"), "{text}");
}

#[tokio::test]
async fn gpu_sim_queues_requests_beyond_its_slots() {
    let m = MockUpstream::start().await;
    m.set_gpu_sim(Some(GpuSim { slots: 1, service: Duration::from_millis(200) }));
    let url = format!("{}/chat/completions", m.openai_base_url());
    let started = Instant::now();
    let requests: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let body = json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]});
                let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                started.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = metrics(&m).await;
    assert!(text.contains("vllm:num_requests_running{model_name=\"mock-gpt\"} 1.0"), "{text}");
    assert!(text.contains("vllm:num_requests_waiting{model_name=\"mock-gpt\"} 2.0"), "{text}");
    assert!(text.contains("vllm:kv_cache_usage_perc{model_name=\"mock-gpt\"} 1.0"), "{text}");
    let mut latencies = Vec::new();
    for request in requests {
        latencies.push(request.await.unwrap());
    }
    latencies.sort();
    assert!(latencies[2] >= Duration::from_millis(600), "the third waited for two services: {latencies:?}");
    let text = metrics(&m).await;
    assert!(text.contains("vllm:num_requests_running{model_name=\"mock-gpt\"} 0.0"), "{text}");
}
