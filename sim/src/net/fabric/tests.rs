//! The simulated network's sockets, on a paused runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn::env::{TcpListener, UdpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::action::Action;
use crate::net::topology::{Datacenter, Dist, LatencyModel, Location, PoolScope, Topology};
use crate::net::{ip_of, Model};

/// Three hosts 5 ms apart (one way), on links of `bandwidth` bytes a
/// second.
fn network_of(bandwidth: f64) -> Arc<Network> {
    let latency = LatencyModel {
        intra_dc: Dist::Const(Duration::from_millis(5)),
        bandwidth,
        ..LatencyModel::default()
    };
    let topo = Topology::new(
        vec![Datacenter {
            name: "dc1".into(),
            clients: 3,
            servers: 0,
            location: Location::Unplaced,
        }],
        PoolScope::Datacenter,
        latency,
    );
    let model = Model::drawn(&topo, 1, Vec::new()).unwrap();
    let ips: Vec<IpAddr> = (0..3).map(ip_of).collect();
    let net = Network::new(model, &ips);
    for i in 0..3 {
        net.host_up(i);
    }
    tokio::spawn(net.clone().pump());
    net
}

/// Three hosts 5 ms apart, on links without a bandwidth limit (so that
/// arrivals fall on whole milliseconds).
fn network() -> Arc<Network> {
    network_of(f64::INFINITY)
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

fn addr(i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(ip_of(i), port)
}

fn ms(t: Instant) -> u64 {
    t.as_duration().as_millis() as u64
}

fn us(t: Instant) -> u64 {
    t.as_duration().as_micros() as u64
}

/// `f`, unless `d` of virtual time passes first.
async fn within<F: std::future::Future>(net: &Network, d: Duration, f: F) -> Option<F::Output> {
    let deadline = net.deadline(net.now() + d);
    tokio::time::timeout_at(deadline, f).await.ok()
}

fn names(x: &[&str]) -> Vec<String> {
    x.iter().map(|s| s.to_string()).collect()
}

fn idx(name: &str) -> Option<usize> {
    name.strip_prefix("dc1-")?.parse().ok()
}

#[test]
fn datagrams_arrive_after_the_link_latency_and_not_across_a_cut() {
    run(async {
        let net = network();
        let a = net.bind_udp(0, addr(0, 7000)).unwrap();
        let b = net.bind_udp(1, "0.0.0.0:7000".parse().unwrap()).unwrap();
        a.send_to(b"hello", addr(1, 7000)).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], addr(0, 7000)));
        assert_eq!(ms(net.now()), 5);
        // A one-way cut: 0 no longer reaches 1, 1 still reaches 0.
        let cut = Action::OneWay(names(&["dc1-0"]), names(&["dc1-1"]));
        net.with_model(|m| m.apply(&cut, idx));
        a.send_to(b"lost", addr(1, 7000)).await.unwrap();
        b.send_to(b"back", addr(0, 7000)).await.unwrap();
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
        let late = within(&net, Duration::from_secs(1), b.recv_from(&mut buf)).await;
        assert!(late.is_none(), "nothing crosses the cut");
        // Port clashes are refused; a dropped socket frees its port.
        assert!(net.bind_udp(1, addr(1, 7000)).is_err());
        drop(b);
        assert!(net.bind_udp(1, addr(1, 7000)).is_ok());
    });
}

#[test]
fn a_connection_costs_a_round_trip_and_bytes_their_transfer_time() {
    run(async {
        let net = network_of(1e6);
        let l = net.bind_tcp(1, addr(1, 80)).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, from) = l.accept().await.unwrap();
            let mut got = vec![0u8; 100_000];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(b"done").await.unwrap();
            (from, got)
        });
        let t0 = net.now();
        let mut c = net.connect(0, addr(1, 80)).await.unwrap();
        assert_eq!(ms(net.now()) - ms(t0), 10, "connect takes one round trip");
        c.write_all(&vec![7u8; 100_000]).await.unwrap();
        let mut reply = [0u8; 4];
        c.read_exact(&mut reply).await.unwrap();
        // 100 KB at 1 MB/s take 100 ms to send, then 5 ms to arrive; the
        // reply takes 4 µs to send (which the timers round up to a tick)
        // and 5 ms back.
        let tick = TIMER_RESOLUTION.as_micros() as u64;
        assert_eq!(
            us(net.now()),
            1000 * (10 + 100 + 5 + 5) + 4u64.div_ceil(tick) * tick
        );
        let (from, got) = server.await.unwrap();
        assert_eq!(from, c.local_addr());
        assert!(got.iter().all(|&b| b == 7));
        assert_eq!(&reply, b"done");
        // Nothing listening: refused after a round trip.
        let e = net.connect(0, addr(2, 81)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    });
}

#[test]
fn bytes_stall_across_a_partition_and_cross_after_it_heals() {
    run(async {
        let net = network();
        let l = net.bind_tcp(1, addr(1, 80)).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            got
        });
        let mut c = net.connect(0, addr(1, 80)).await.unwrap();
        let cut = Action::Partition(names(&["dc1-0"]), names(&["dc1-1"]));
        net.with_model(|m| m.apply(&cut, idx));
        c.write_all(b"later").await.unwrap();
        net.sleep(Duration::from_secs(3)).await;
        assert!(!server.is_finished(), "nothing crosses while cut");
        net.with_model(|m| m.apply(&Action::Heal, idx));
        let got = server.await.unwrap();
        assert_eq!(&got, b"later");
        // Retransmitted at 10+200, 10+600, 10+1400, 10+3000 ms (doubling
        // from 200 ms): the first after the heal at 3010 ms carries it.
        assert_eq!(ms(net.now()), 10 + 3000 + 5);
        // A connect across a cut waits for its SYN retries, and gives up.
        let clog = Action::Clog(names(&["dc1-0"]), names(&["dc1-2"]), true);
        net.with_model(|m| m.apply(&clog, idx));
        let t0 = ms(net.now());
        let e = net.connect(0, addr(2, 80)).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(ms(net.now()) - t0, 127_000);
    });
}

#[test]
fn a_crashed_hosts_connections_reset_at_their_peers() {
    run(async {
        let net = network();
        let l = net.bind_tcp(1, addr(1, 80)).unwrap();
        let accept = tokio::spawn(async move { l.accept().await.map(|(s, _)| s) });
        let mut c = net.connect(0, addr(1, 80)).await.unwrap();
        let _server_end = accept.await.unwrap().unwrap();
        let t0 = ms(net.now());
        net.host_down(1);
        let mut buf = [0u8; 8];
        let e = c.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(ms(net.now()) - t0, 5);
        assert!(c.write_all(b"x").await.is_err());
        // Down, it cannot be reached; its ports are free once it is back.
        let e = within(&net, Duration::from_secs(1), net.connect(0, addr(1, 80))).await;
        assert!(e.is_none(), "an unanswered SYN waits");
        net.host_up(1);
        assert!(net.bind_tcp(1, addr(1, 80)).is_ok());
    });
}

#[test]
fn a_reset_cuts_a_hosts_connections_but_it_listens_and_connects_again() {
    run(async {
        let net = network();
        let l = net.bind_tcp(1, addr(1, 80)).unwrap();
        let accept = tokio::spawn(async move {
            let (a, _) = l.accept().await.unwrap();
            let (b, _) = l.accept().await.unwrap();
            (a, b)
        });
        let mut c = net.connect(0, addr(1, 80)).await.unwrap();
        c.write_all(b"lost").await.unwrap();
        let t0 = ms(net.now());
        net.reset_connections(0);
        // Host 0's end hears it at once; what it had sent never arrives.
        let mut buf = [0u8; 8];
        let e = c.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(ms(net.now()), t0);
        // Host 0 is up: it connects again, and bytes cross.
        let mut c2 = net.connect(0, addr(1, 80)).await.unwrap();
        c2.write_all(b"again").await.unwrap();
        let (mut first, mut second) = accept.await.unwrap();
        let e = first.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let n = second.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"again");
    });
}

#[test]
fn a_writer_waits_for_its_reader_beyond_the_window() {
    run(async {
        let net = network();
        let l = net.bind_tcp(1, addr(1, 80)).unwrap();
        let accept = tokio::spawn(async move { l.accept().await.map(|(s, _)| s) });
        let mut c = net.connect(0, addr(1, 80)).await.unwrap();
        let mut s = accept.await.unwrap().unwrap();
        let big = vec![1u8; WINDOW + 10];
        let writer = tokio::spawn(async move {
            c.write_all(&big).await.unwrap();
            c.shutdown().await.unwrap();
        });
        net.sleep(Duration::from_secs(30)).await;
        assert!(
            !writer.is_finished(),
            "the window is full until the reader reads"
        );
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), WINDOW + 10);
        writer.await.unwrap();
    });
}
