//! Three cairn servers on 127.0.0.1 answering clients on their RPC port:
//! writes through any server reach the leader; reads are forwarded,
//! confirmed, or answered locally as asked; a blocking read wakes when its
//! data changes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cairn::consensus::Location;
use cairn::env::{Env, TokioEnv};
use cairn::rpc::Client;
use cairn::server::{
    Answer, ClientReply, ClientRequest, Consistency, Query, Read, Server, ServerReply, ServerRpc,
};
use cairn::state::{Command, KvOp};
use openraft::BasicNode;

type Rpc = Client<TokioEnv, ServerRpc, ServerReply>;

async fn ask(client: &Rpc, env: &TokioEnv, addr: SocketAddr, req: ClientRequest) -> ClientReply {
    let deadline = env.now() + Duration::from_secs(15);
    match client.call(addr, &ServerRpc::Client(req), deadline).await {
        Ok(ServerReply::Client(r)) => r,
        other => panic!("unexpected reply: {other:?}"),
    }
}

fn put(key: &str, value: &str, op: KvOp) -> ClientRequest {
    ClientRequest::Write {
        cmd: Box::new(Command::Kv {
            op,
            key: key.into(),
            value: value.as_bytes().to_vec(),
            flags: 0,
        }),
        hops: 0,
    }
}

fn get(key: &str, consistency: Consistency, min_index: u64) -> ClientRequest {
    ClientRequest::Read {
        read: Read {
            consistency,
            min_index,
            max_wait_ms: 10_000,
            query: Query::Kv(key.into()),
        },
        hops: 0,
    }
}

fn value(r: &ClientReply) -> Option<String> {
    match &r.answer {
        Ok(Answer::Kv(e)) => e
            .as_ref()
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()),
        other => panic!("not a KV answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_the_leader_through_any_server() {
    let env = TokioEnv::new();
    let root = tempfile::tempdir().unwrap();
    let config = Arc::new(
        openraft::Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for id in 1..=3u64 {
        let listener = env.bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let dir = root.path().join(format!("s{id}"));
        servers.push(
            Server::start(
                env.clone(),
                id,
                &Location::Dir(dir),
                listener,
                config.clone(),
                (None, None),
            )
            .await
            .unwrap(),
        );
    }
    let members: BTreeMap<u64, BasicNode> = (0..3)
        .map(|i| (i as u64 + 1, BasicNode::new(addrs[i].to_string())))
        .collect();
    servers[0].raft().initialize(members).await.unwrap();
    let leader = servers[0]
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .unwrap()
        .current_leader
        .unwrap();
    let follower = addrs[servers.iter().position(|s| s.id() != leader).unwrap()];
    let leader_addr = addrs[(leader - 1) as usize];
    let client = Rpc::new(env.clone());

    // A write through a follower is forwarded and acknowledged.
    let w = ask(&client, &env, follower, put("cfg", "one", KvOp::Set)).await;
    assert_eq!(w.answer, Ok(Answer::Written(true)));
    assert!(w.index > 0);
    // A failed check-and-set is an answer, not an error.
    let cas = ask(
        &client,
        &env,
        follower,
        put("cfg", "x", KvOp::Cas { index: 0 }),
    )
    .await;
    assert_eq!(cas.answer, Ok(Answer::Written(false)));

    // Default reads go to the leader; consistent ones too, after a check.
    let r = ask(&client, &env, follower, get("cfg", Consistency::Default, 0)).await;
    assert_eq!(
        (value(&r), r.known_leader, r.last_contact_ms),
        (Some("one".into()), true, 0)
    );
    let r = ask(
        &client,
        &env,
        follower,
        get("cfg", Consistency::Consistent, 0),
    )
    .await;
    assert_eq!(value(&r), Some("one".into()));
    // A stale read is the follower's own, and says how fresh it is.
    let mut stale = ask(&client, &env, follower, get("cfg", Consistency::Stale, 0)).await;
    for _ in 0..50 {
        if value(&stale).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stale = ask(&client, &env, follower, get("cfg", Consistency::Stale, 0)).await;
    }
    assert_eq!(value(&stale), Some("one".into()));
    assert!(stale.last_contact_ms < 10_000, "{}", stale.last_contact_ms);

    // A blocking read waits for the next change, then sees it.
    let seen = r.index;
    let blocked = {
        let (client, env) = (Rpc::new(env.clone()), env.clone());
        tokio::spawn(async move {
            ask(
                &client,
                &env,
                follower,
                get("cfg", Consistency::Stale, seen),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!blocked.is_finished(), "nothing changed yet");
    let w2 = ask(&client, &env, leader_addr, put("cfg", "two", KvOp::Set)).await;
    let woke = blocked.await.unwrap();
    assert!(woke.index > seen && woke.index <= w2.index);
    assert_eq!(value(&woke), Some("two".into()));

    for s in &servers {
        s.shutdown().await;
    }
}
