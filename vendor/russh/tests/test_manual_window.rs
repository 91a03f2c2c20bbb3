//! `server::Config::manual_window`: a channel's window re-opens only for the
//! bytes the application reports consumed, so a stalled consumer holds back its
//! own channel and no other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::server::{self, Auth, Msg, Server as _, Session, VerifiedPublicKey};
use russh::{Channel, ChannelMsg, client};
use ssh_key::PrivateKey;
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep, timeout};

const WINDOW: u32 = 256 * 1024;
const TOTAL: usize = 4 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_channel_gets_no_window_and_holds_back_no_other() -> Result<(), anyhow::Error> {
    let _ = env_logger::try_init();
    let state = Arc::new(State::default());
    let addr = start_server(Arc::clone(&state)).await?;
    let session = connect(addr).await?;

    // Channel A: its consumer is stalled.
    let a = session.channel_open_session().await?;
    let mut a_writer = a.make_writer();
    let a_upload = tokio::spawn(async move {
        a_writer.write_all(&vec![1u8; TOTAL]).await?;
        a_writer.flush().await
    });

    // Channel B, same session: consumed as it arrives, so it gets through.
    let b = session.channel_open_session().await?;
    let mut b_writer = b.make_writer();
    timeout(Duration::from_secs(30), async {
        b_writer.write_all(&vec![2u8; TOTAL]).await?;
        b_writer.flush().await
    })
    .await
    .expect("channel B is not held back by channel A")?;
    timeout(Duration::from_secs(30), async {
        while state.received(2) < TOTAL {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all of channel B arrived");

    // A got exactly its window and no more.
    sleep(Duration::from_millis(300)).await;
    assert_eq!(state.received(1), WINDOW as usize);
    assert!(!a_upload.is_finished());

    // Consuming re-opens A's window.
    state.release.store(true, Ordering::SeqCst);
    state.consume_backlog();
    timeout(Duration::from_secs(30), a_upload)
        .await
        .expect("channel A finishes once consumed")??;
    timeout(Duration::from_secs(30), async {
        while state.received(1) < TOTAL {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("all of channel A arrived");
    Ok(())
}

#[derive(Default)]
struct State {
    /// Bytes received per channel, by the order the channels were opened (1, 2).
    received: Mutex<Vec<usize>>,
    opened: AtomicUsize,
    /// Channel A's consumer runs.
    release: AtomicBool,
    /// What channel A received before it ran, and how to report it.
    held: Mutex<Option<(server::Handle, russh::ChannelId, usize)>>,
}

impl State {
    fn received(&self, n: usize) -> usize {
        self.received.lock().unwrap().get(n - 1).copied().unwrap_or(0)
    }

    fn consume_backlog(&self) {
        if let Some((handle, id, bytes)) = self.held.lock().unwrap().take() {
            handle.channel_consumed(id, bytes as u32).unwrap();
        }
    }
}

async fn start_server(state: Arc<State>) -> Result<SocketAddr, anyhow::Error> {
    let config = Arc::new(server::Config {
        keys: vec![PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519).unwrap()],
        window_size: WINDOW,
        manual_window: true,
        ..Default::default()
    });
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move { Server(state).run_on_socket(config, &socket).await });
    Ok(addr)
}

async fn connect(addr: SocketAddr) -> Result<client::Handle<Client>, anyhow::Error> {
    let config = Arc::new(client::Config::default());
    let mut session = client::connect(config, addr, Client).await?;
    let key = Arc::new(PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519).unwrap());
    let auth = session
        .authenticate_publickey("user", PrivateKeyWithHashAlg::new(key, None))
        .await?;
    assert!(auth.success(), "authentication failed");
    Ok(session)
}

#[derive(Clone)]
struct Server(Arc<State>);

impl server::Server for Server {
    type Handler = Self;

    fn new_client(&mut self, _: Option<SocketAddr>) -> Self::Handler {
        self.clone()
    }
}

impl server::Handler for Server {
    type Error = anyhow::Error;

    async fn auth_publickey(
        &mut self,
        _: &str,
        _: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        mut channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let state = Arc::clone(&self.0);
        let n = state.opened.fetch_add(1, Ordering::SeqCst) + 1;
        state.received.lock().unwrap().push(0);
        let handle = session.handle();
        let id = channel.id();
        tokio::spawn(async move {
            while let Some(msg) = channel.wait().await {
                if let ChannelMsg::Data { data } = msg {
                    state.received.lock().unwrap()[n - 1] += data.len();
                    if n == 2 || state.release.load(Ordering::SeqCst) {
                        let _ = handle.channel_consumed(id, data.len() as u32);
                    } else {
                        let mut held = state.held.lock().unwrap();
                        let entry = held.get_or_insert((handle.clone(), id, 0));
                        entry.2 += data.len();
                    }
                }
            }
        });
        Ok(())
    }
}

struct Client;

impl client::Handler for Client {
    type Error = anyhow::Error;

    async fn check_server_key(&mut self, _: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}
