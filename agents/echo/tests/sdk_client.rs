//! The official A2A Python SDK's client (tests/python/sdk_client.py) against
//! the echo agent binary over JSON-RPC: it finds the agent through its card,
//! sends and streams, and a resend with the same message id is answered as
//! the same message.

use agentmesh_testkit::python::sdk_client;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The echo agent binary on a free port, killed when dropped.
struct EchoAgent {
    base: String,
    _child: Child,
}

impl EchoAgent {
    async fn spawn() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentmesh-echo-agent"))
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("PORT")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = lines.next_line().await.unwrap().expect("the agent prints its address");
        let address = line.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected line {line:?}"));
        Self { base: format!("http://{address}"), _child: child }
    }

    fn card_url(&self) -> String {
        format!("{}/.well-known/agent-card.json", self.base)
    }

    async fn admin(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.base)).await.unwrap().json().await.unwrap()
    }
}

fn text_of(message: &Value) -> &str {
    message["parts"][0]["text"].as_str().unwrap_or_else(|| panic!("no text part in {message}"))
}

#[tokio::test]
async fn sdk_client_sends_and_streams_to_the_echo_agent() {
    let agent = EchoAgent::spawn().await;
    let card = agent.card_url();

    let events = sdk_client(&["--card-url", &card, "--transport", "jsonrpc", "--text", "hello"]).await.expect_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let reply = &events[0]["message"];
    assert_eq!((text_of(reply), &reply["role"]), ("echo: hello", &json!("ROLE_AGENT")));

    let events = sdk_client(&["--card-url", &card, "--text", "streamed", "--stream"]).await.expect_events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["statusUpdate"]["status"]["state"], "TASK_STATE_WORKING");
    assert_eq!(text_of(&events[1]["message"]), "echo: streamed");
    assert_eq!(events[1]["message"]["contextId"], events[0]["statusUpdate"]["contextId"]);

    assert_eq!(agent.admin("/admin/received").await, json!(["hello", "streamed"]));
}

#[tokio::test]
async fn sdk_client_resending_a_message_id_gets_the_same_reply() {
    let agent = EchoAgent::spawn().await;
    let send = ["--card-url", &agent.card_url(), "--text", "once", "--message-id", "sdk-m-1"];
    let first = sdk_client(&send).await.expect_events();
    let again = sdk_client(&send).await.expect_events();
    assert_eq!(again, first);
    assert_eq!(text_of(&first[0]["message"]), "echo: once");
    let streamed = sdk_client(&[&send[..], &["--stream"]].concat()).await.expect_events();
    assert_eq!(streamed.last().unwrap()["message"], first[0]["message"]);
    assert_eq!(agent.admin("/admin/received").await, json!(["once"]));
    assert_eq!(agent.admin("/admin/stats").await, json!({"received": 1, "duplicates": 2}));
}
