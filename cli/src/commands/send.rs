//! `agentmesh send`: an A2A message to a workspace's agent, through the
//! gateway's gRPC binding, as any A2A client would send it.

use std::process::ExitCode;

use agentmesh_proto::a2a::v1::{
    Message, Part, Role, SendMessageRequest, StreamResponse, SubscribeToTaskRequest, Task, TaskState, part::Content,
    send_message_response::Payload, stream_response::Payload as Event,
};
use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::{word, workspace_id};
use crate::{
    args::SendArgs,
    connect::{Mesh, ask, unreachable_or},
    failure::Failure,
    output::Printer,
};

/// What came of a message, for scripts.
#[derive(Debug, Serialize)]
struct Outcome {
    workspace_id: String,
    message_id: String,
    /// delivered, queued, or the state of the agent's task.
    state: String,
    reply: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    queued: Option<Value>,
}

pub async fn run(mesh: &Mesh, printer: &Printer, args: SendArgs) -> Result<ExitCode, Failure> {
    let workspace_id = workspace_id(mesh, &args.workspace).await?;
    let message_id = args.message_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let message = Message {
        message_id: message_id.clone(),
        role: Role::User as i32,
        parts: vec![Part { content: Some(Content::Text(args.text.clone())), ..Default::default() }],
        ..Default::default()
    };
    let request = SendMessageRequest { tenant: workspace_id.clone(), message: Some(message), ..Default::default() };
    let gateway = &mesh.resolved.context.gateway;
    let mut outcome = Outcome {
        workspace_id: workspace_id.clone(),
        message_id,
        state: String::new(),
        reply: String::new(),
        queued: None,
    };

    if args.stream {
        let mut events = ask(gateway, mesh.a2a()?.send_streaming_message(request)).await?;
        while let Some(event) = events.next().await {
            let event = event.map_err(|status| unreachable_or(gateway, status))?;
            if let Some(task) = queued_task(&event) {
                outcome.state = "queued".into();
                outcome.queued = queued(&task);
                break;
            }
            progress(printer, &event, &mut outcome, true);
        }
    } else {
        match ask(gateway, mesh.a2a()?.send_message(request)).await?.payload {
            Some(Payload::Message(reply)) => {
                outcome.state = "delivered".into();
                outcome.reply = text(&reply.parts);
            }
            Some(Payload::Task(task)) => match queued(&task) {
                Some(report) => {
                    outcome.state = "queued".into();
                    outcome.queued = Some(report);
                }
                None => settle_task(&mut outcome, &task),
            },
            None => outcome.state = "answered without a reply".into(),
        }
    }

    if let (Some(report), true) = (&outcome.queued, args.follow) {
        if !printer.structured() {
            say!(
                "queued as {} ({}), waiting for the reply…",
                report["queueId"].as_str().unwrap_or("?"),
                describe_queue(report)
            );
        }
        let task_id = report["queueId"].as_str().unwrap_or_default().to_owned();
        let request = SubscribeToTaskRequest { tenant: workspace_id.clone(), id: task_id };
        let mut events = ask(gateway, mesh.a2a()?.subscribe_to_task(request)).await?;
        outcome.queued = None;
        while let Some(event) = events.next().await {
            let event = event.map_err(|status| unreachable_or(gateway, status))?;
            progress(printer, &event, &mut outcome, args.stream);
        }
    }

    if printer.structured() {
        printer.record(&outcome)?;
    } else if let Some(report) = &outcome.queued {
        say!("queued as {} ({})", report["queueId"].as_str().unwrap_or("?"), describe_queue(report));
    } else if !args.stream {
        say!("{}", outcome.reply);
    }
    match outcome.state.as_str() {
        "failed" | "canceled" | "rejected" => Err(Failure::Failed(format!("the agent's task is {}", outcome.state))),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Takes in one streamed event: the reply is kept and, when `live`, what
/// the agent says is printed as it arrives; a state change is shown on
/// stderr to a person.
fn progress(printer: &Printer, event: &StreamResponse, outcome: &mut Outcome, live: bool) {
    let live = live && !printer.structured();
    match &event.payload {
        Some(Event::Message(reply)) => {
            outcome.state = "delivered".into();
            outcome.reply = text(&reply.parts);
            if live {
                say!("{}", outcome.reply);
            }
        }
        Some(Event::Task(task)) => {
            settle_task(outcome, task);
            if live && !outcome.reply.is_empty() {
                say!("{}", outcome.reply);
            }
        }
        Some(Event::StatusUpdate(update)) => {
            let state = update.status.as_ref().map(|s| s.state()).unwrap_or_default();
            outcome.state = task_word(state);
            let said = update.status.as_ref().and_then(|s| s.message.as_ref()).map(|m| text(&m.parts));
            if let Some(said) = said.filter(|said| !said.is_empty()) {
                if live {
                    say!("{said}");
                }
                outcome.reply = said;
            }
            if !printer.structured() && crate::output::person_on_stderr() {
                eprintln!("… {}", outcome.state);
            }
        }
        Some(Event::ArtifactUpdate(update)) => {
            if let Some(artifact) = &update.artifact {
                let chunk = text(&artifact.parts);
                if live {
                    say!("{chunk}");
                }
                outcome.reply.push_str(&chunk);
            }
        }
        None => {}
    }
}

fn settle_task(outcome: &mut Outcome, task: &Task) {
    let status = task.status.as_ref();
    outcome.state = task_word(status.map(|s| s.state()).unwrap_or_default());
    let mut reply = status.and_then(|s| s.message.as_ref()).map(|m| text(&m.parts)).unwrap_or_default();
    for artifact in &task.artifacts {
        reply.push_str(&text(&artifact.parts));
    }
    if !reply.is_empty() {
        outcome.reply = reply;
    }
}

fn task_word(state: TaskState) -> String {
    word(state.as_str_name(), "TASK_STATE_")
}

/// The text parts of a message, joined.
fn text(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|part| match &part.content {
            Some(Content::Text(text)) => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A streamed task that is the gateway's report of a queued message.
fn queued_task(event: &StreamResponse) -> Option<Task> {
    match &event.payload {
        Some(Event::Task(task)) if queued(task).is_some() => Some(task.clone()),
        _ => None,
    }
}

/// The gateway's `agentmesh.queued` report on a task it queued.
fn queued(task: &Task) -> Option<Value> {
    let metadata = task.metadata.as_ref()?;
    let agentmesh = json(metadata.fields.get("agentmesh")?);
    let report = agentmesh.get("queued")?.clone();
    Some(report)
}

fn describe_queue(report: &Value) -> String {
    let depth = report["depth"].as_str().map(str::to_owned).unwrap_or_else(|| report["depth"].to_string());
    let reason = word(report["reason"].as_str().unwrap_or_default(), "QUEUE_REASON_");
    format!("depth {depth}, {reason}")
}

/// A protobuf `Value` as JSON.
fn json(value: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &value.kind {
        Some(Kind::NullValue(_)) | None => Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(json).collect()),
    }
}
