//! Sealed gossip: the datagram format (forgery, tampering, replay, rotation) and real UDP nodes on
//! loopback, where a process without the cluster secret neither joins nor gets its datagrams read.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::sealed::{open, seal, Refused, REPLAY_WINDOW_MS};
use super::tests::{break_endpoint, registry, settings, wait_for};
use super::{Gossip, GossipSettings, SecretSource};

const OLD: &str = "old-cluster-secret-0123456789";
const NEW: &str = "new-cluster-secret-9876543210";

fn secrets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_sealed_datagram_opens_only_with_an_accepted_secret_and_intact() {
    let now = 1_700_000_000_000;
    let sealed = seal(OLD, now, b"chitchat bytes");
    assert_eq!(open(&secrets(&[OLD]), now, &sealed), Ok(&b"chitchat bytes"[..]));
    assert_eq!(open(&secrets(&[NEW, OLD]), now, &sealed), Ok(&b"chitchat bytes"[..]), "any accepted secret opens");
    assert_eq!(open(&secrets(&[NEW]), now, &sealed), Err(Refused::Unauthenticated), "another cluster's secret");
    assert_eq!(open(&[], now, &sealed), Err(Refused::Unauthenticated));
    for at in 0..sealed.len() {
        let mut tampered = sealed.clone();
        tampered[at] ^= 0x01;
        assert_eq!(open(&secrets(&[OLD]), now, &tampered), Err(Refused::Unauthenticated), "byte {at} flipped");
    }
    assert_eq!(open(&secrets(&[OLD]), now, &sealed[..sealed.len() - 1]), Err(Refused::Unauthenticated), "cut");
    assert_eq!(open(&secrets(&[OLD]), now, b"\xb3\xb0\x01\x00"), Err(Refused::Unauthenticated), "plain chitchat");
    assert_eq!(open(&secrets(&[OLD]), now, b""), Err(Refused::Unauthenticated));
    assert!(!sealed.windows(OLD.len()).any(|w| w == OLD.as_bytes()), "the secret never travels");
}

#[test]
fn a_datagram_stamped_outside_the_window_is_a_replay() {
    let now = 1_700_000_000_000;
    let sealed = seal(OLD, now, b"x");
    let accepted = secrets(&[OLD]);
    assert!(open(&accepted, now + REPLAY_WINDOW_MS, &sealed).is_ok(), "inside the window (clock skew)");
    assert!(open(&accepted, now - REPLAY_WINDOW_MS, &sealed).is_ok());
    assert_eq!(open(&accepted, now + REPLAY_WINDOW_MS + 1, &sealed), Err(Refused::Stale), "replayed later");
    assert_eq!(open(&accepted, now - REPLAY_WINDOW_MS - 1, &sealed), Err(Refused::Stale), "stamped ahead");
}

fn sealed_settings(node_id: u64, seeds: Vec<String>, accepted: &[&str]) -> GossipSettings {
    let accepted = Arc::new(secrets(accepted));
    let source: SecretSource = Arc::new(move || accepted.clone());
    GossipSettings { secrets: Some(source), ..settings(node_id, ([127, 0, 0, 1], 0).into(), seeds) }
}

async fn start(settings: GossipSettings) -> (Gossip, Arc<crate::health::EndpointRegistry>) {
    let registry = registry();
    let gossip = Gossip::start(settings, registry.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));
    (gossip, registry)
}

#[tokio::test]
async fn sealed_nodes_gossip_over_udp_through_a_rotation() {
    // Mid-rotation: one node already signs with the new secret, the other still with the old; each
    // accepts both.
    let (first, first_registry) = start(sealed_settings(1, Vec::new(), &[NEW, OLD])).await;
    let seed = first.gossip_addr().to_string();
    let (second, second_registry) = start(sealed_settings(2, vec![seed], &[OLD, NEW])).await;
    wait_for("both see two live members", Duration::from_secs(5), || {
        first.view().live_members().count() == 2 && second.view().live_members().count() == 2
    })
    .await;
    break_endpoint(&second_registry, "gpu-b");
    let endpoint = first_registry.endpoint("gpu-b");
    wait_for("node 1 sees node 2's open breaker", Duration::from_secs(2), || endpoint.remote_open()).await;
    for node in [&first, &second] {
        let stats = node.seal_stats().unwrap_or_else(|| panic!("sealed"));
        assert_eq!(stats.rejected_unauthenticated.load(Ordering::Relaxed), 0, "nothing refused between members");
    }
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn a_node_without_the_secret_neither_joins_nor_is_read() {
    let (member, member_registry) = start(sealed_settings(1, Vec::new(), &[OLD])).await;
    let seed = member.gossip_addr().to_string();
    // Same cluster id, unsealed: chitchat's own UDP datagrams, as a forger on the network would send.
    let (plain, plain_registry) = start(settings(2, ([127, 0, 0, 1], 0).into(), vec![seed.clone()])).await;
    // Sealed, but with another cluster's secret.
    let (stranger, _) = start(sealed_settings(3, vec![seed], &[NEW])).await;
    break_endpoint(&plain_registry, "gpu-a");
    let stats = member.seal_stats().unwrap_or_else(|| panic!("sealed"));
    wait_for("both intruders' datagrams refused", Duration::from_secs(5), || {
        stats.rejected_unauthenticated.load(Ordering::Relaxed) >= 4
    })
    .await;
    // Give them several more gossip rounds (interval 50 ms) to get anything in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = member.view();
    assert_eq!(view.members.len(), 1, "only itself: {:?}", view.members);
    assert!(!member_registry.endpoint("gpu-a").remote_open(), "the forged open breaker did not count");
    assert_eq!(plain.view().live_members().count(), 1, "the member's sealed datagrams mean nothing to it");
    assert_eq!(stranger.view().live_members().count(), 1, "nor to a node with another secret");
    for node in [&stranger, &plain, &member] {
        node.shutdown().await;
    }
}
