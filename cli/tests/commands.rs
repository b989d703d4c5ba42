//! The `agentmesh` binary against a mesh started by `agentmesh dev`: every
//! command, as a table and as JSON, and every failure as one line with the
//! exit code `agentmesh --help` documents.

mod common;

use common::{DevMesh, Following, echo_spec_file, until_status};
use serde_json::Value;

fn find<'a>(records: &'a Value, name: &str) -> &'a Value {
    let records = records.as_array().expect("a JSON array");
    records.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no {name} in {records:?}"))
}

#[test]
fn every_command_works_against_agentmesh_dev_as_a_table_and_as_json() {
    let mesh = DevMesh::start();
    let version = env!("CARGO_PKG_VERSION");

    // The mesh at a glance.
    let status = mesh.run(&["status"]).ok();
    for service in ["registry", "provisioner", "a2a-gateway", "scheduler"] {
        let row = status.lines().find(|line| line.starts_with(service)).unwrap_or_else(|| panic!("{status}"));
        assert!(row.contains("serving") && row.contains(version), "{row}");
    }
    let status = mesh.run(&["status", "-o", "json"]).json();
    assert_eq!(status.as_array().unwrap().len(), 4);
    assert!(status.as_array().unwrap().iter().all(|s| s["health"] == "serving" && s["version"] == version));
    let runtimes = mesh.run(&["runtimes", "-o", "json"]).json();
    let names: Vec<&str> =
        runtimes["runtimes"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"process:local") && names.contains(&"external"), "{names:?}");
    assert!(mesh.run(&["runtimes"]).ok().contains("process:local"));

    // A workspace from a spec file, waited for until its agent is online.
    let dir = tempfile::tempdir().unwrap();
    let spec = echo_spec_file(dir.path(), "echo-cli", 0);
    let created = mesh.run(&["ws", "create", "-f", spec.to_str().unwrap(), "--wait", "-o", "json"]).json();
    assert_eq!(created["status"], "online", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let table = mesh.run(&["ws", "list"]).ok();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ID", "RUNTIME", "STATUS", "LOAD", "HEARTBEAT"]);
    let row = lines.find(|line| line.starts_with("echo-cli")).unwrap_or_else(|| panic!("{table}"));
    for cell in [&id[..8], "process/process:local", "online", "0/"] {
        assert!(row.contains(cell), "{cell:?} in {row:?}");
    }
    let wide = mesh.run(&["ws", "list", "-o", "wide"]).ok();
    assert!(wide.lines().next().unwrap().contains("URL") && wide.contains("team=cli"), "{wide}");
    let listed = mesh.run(&["ws", "list", "-o", "json"]).json();
    assert_eq!(find(&listed, "echo-cli")["labels"]["team"], "cli");
    assert_eq!(mesh.run(&["ws", "list", "-l", "team=cli", "-o", "json"]).json().as_array().unwrap().len(), 1);
    assert_eq!(mesh.run(&["ws", "list", "-l", "team=other", "-o", "json"]).json(), Value::Array(vec![]));
    assert_eq!(mesh.run(&["ws", "list", "--status", "offline", "-o", "json"]).json(), Value::Array(vec![]));
    let by_prefix = mesh.run(&["ws", "get", &id[..8], "-o", "json"]).json();
    assert_eq!(by_prefix["name"], "echo-cli");
    let yaml = mesh.run(&["ws", "get", "echo-cli", "-o", "yaml"]).ok();
    assert!(yaml.contains(&format!("id: {id}")) && yaml.contains("status: online"), "{yaml}");

    // Messages through the gateway, answered, streamed, and as a record.
    assert_eq!(mesh.run(&["send", "echo-cli", "hi"]).ok(), "echo: hi\n");
    assert!(mesh.run(&["send", "echo-cli", "streamed", "--stream"]).ok().contains("echo: streamed"));
    let sent = mesh.run(&["send", "echo-cli", "as json", "--message-id", "cli-1", "-o", "json"]).json();
    assert_eq!((&sent["message_id"], &sent["reply"]), (&Value::from("cli-1"), &Value::from("echo: as json")));
    assert_eq!(sent["workspace_id"], id.as_str());
    assert!(mesh.run(&["ws", "logs", "echo-cli", "--tail", "5"]).code == 0);

    // Schedules: the whole life of one.
    let schedule = mesh
        .run(&[
            "sched",
            "create",
            "--workspace",
            "echo-cli",
            "--name",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--text",
            "report",
        ])
        .ok();
    assert!(schedule.starts_with("schedule nightly ("), "{schedule}");
    let listed = mesh.run(&["sched", "list", "--workspace", "echo-cli", "-o", "json"]).json();
    let schedule_id = find(&listed, "nightly")["id"].as_str().unwrap().to_owned();
    assert!(mesh.run(&["sched", "list"]).ok().contains("nightly"));
    let updated = mesh.run(&["sched", "update", &schedule_id, "--cron", "0 4 * * *", "-o", "json"]).json();
    assert_eq!(updated["cron"], "0 4 * * *");
    assert_eq!(mesh.run(&["sched", "disable", &schedule_id, "-o", "json"]).json()["enabled"], false);
    assert_eq!(mesh.run(&["sched", "enable", &schedule_id, "-o", "json"]).json()["enabled"], true);
    let triggered = mesh.run(&["sched", "trigger", &schedule_id, "-o", "json"]).json();
    assert_eq!(triggered[0]["trigger"], "manual", "{triggered}");
    let runs = mesh.run(&["sched", "runs", &schedule_id]).ok();
    assert!(runs.starts_with("RUN") && runs.contains("manual"), "{runs}");
    assert_eq!(mesh.run(&["sched", "get", &schedule_id, "-o", "json"]).json()["name"], "nightly");
    mesh.run(&["sched", "delete", &schedule_id]).ok();
    mesh.run(&["sched", "get", &schedule_id]).fails(3, "");

    // The policy, shown and tried without applying it.
    let policy = mesh.run(&["policy", "show", "-o", "json"]).json();
    assert!(policy.get("allowed_images").is_some(), "{policy}");
    let strict = dir.path().join("policy.toml");
    std::fs::write(&strict, "allowed_runtime_kinds = [\"docker\"]\n").unwrap();
    let would = mesh.run(&["policy", "reload", "--file", strict.to_str().unwrap(), "--dry-run"]).ok();
    assert!(would.contains("the policy would change") && would.contains("echo-cli"), "{would}");
    let args = ["policy", "reload", "--file", strict.to_str().unwrap(), "--dry-run", "-o", "json"];
    let dry = mesh.run(&args).json();
    assert_eq!((&dry["changed"], &dry["would_change"]), (&serde_json::json!(false), &serde_json::json!(true)), "{dry}");
    assert_eq!(mesh.run(&["ws", "get", "echo-cli", "-o", "json"]).json()["status"], "online");

    // The lifecycle, watched as it happens.
    let watch = Following::start(&mesh, &["ws", "list", "-w", "-o", "json"]);
    let events = Following::start(
        &mesh,
        &["events", "--workspace", "echo-cli", "--type", "status", "--from-cursor", "0", "-o", "json"],
    );
    assert!(mesh.run(&["ws", "stop", "echo-cli"]).ok().contains("stopped"));
    watch.until("echo-cli stopped", |w| w["name"] == "echo-cli" && w["status"] == "stopped");
    events.until("its stop as an event", |e| e["type"] == "status_changed" && e["status"] == "stopped");
    mesh.run(&["ws", "start", "echo-cli"]).ok();
    watch.until("echo-cli online again", |w| w["name"] == "echo-cli" && w["status"] == "online");
    assert!(mesh.run(&["ws", "restart", "echo-cli"]).ok().contains("restarted"));
    until_status(&mesh, "echo-cli", "online");

    // Hibernated, a message waits in the queue, wakes the workspace, and
    // `--follow` waits for its reply.
    mesh.run(&["ws", "hibernate", "echo-cli"]).ok();
    until_status(&mesh, "echo-cli", "hibernated");
    let queued = mesh.run(&["send", "echo-cli", "later", "--follow"]).ok();
    assert!(queued.contains("echo: later"), "{queued}");
    let items = mesh.run(&["queue", "list", "--workspace", "echo-cli", "--state", "delivered", "-o", "json"]).json();
    assert!(items.as_array().unwrap().iter().any(|i| i["state"] == "delivered"), "{items}");
    let stats = mesh.run(&["queue", "stats", "-o", "json"]).json();
    assert_eq!(stats["totals"]["queued"], 0, "{stats}");
    assert!(mesh.run(&["queue", "stats"]).ok().starts_with("WORKSPACE"));
    assert!(mesh.run(&["queue", "requeue-dead", "--workspace", "echo-cli"]).ok().contains("0 dead letters"));
    let dropped = mesh.run(&["queue", "drop", "--workspace", "echo-cli", "--older-than", "3600", "--dry-run"]).ok();
    assert_eq!(dropped, "0 messages would be dropped\n");
    mesh.run(&["ws", "wake", "echo-cli"]).ok();

    // Removed: gone from the list, there with --all.
    assert!(mesh.run(&["ws", "delete", "echo-cli"]).ok().contains("deleted"));
    assert_eq!(mesh.run(&["ws", "list", "-o", "json"]).json(), Value::Array(vec![]));
    assert_eq!(find(&mesh.run(&["ws", "list", "--all", "-o", "json"]).json(), "echo-cli")["status"], "removed");
    drop((watch, events));
    assert!(mesh.stop(), "Ctrl-C stops agentmesh dev cleanly");
}

#[test]
fn contexts_are_kept_like_kubectls_and_completions_are_printed() {
    let mesh = DevMesh::start();
    assert_eq!(mesh.run(&["config", "current-context"]).ok(), "test\n");
    let shown = mesh.run(&["config", "view"]).ok();
    assert!(shown.contains("[contexts.test]") && shown.contains("operator.token"), "{shown}");

    mesh.run(&["config", "set-context", "far", "--host", "mesh.example", "--token", "s3cret"]).ok();
    assert!(!mesh.run(&["config", "view"]).ok().contains("s3cret"), "tokens are not shown");
    // Changing a context's host keeps its token.
    mesh.run(&["config", "set-context", "far", "--host", "mesh2.example"]).ok();
    let far = &mesh.run(&["config", "view", "-o", "json"]).json()["contexts"]["far"];
    assert_eq!(
        (&far["gateway"], &far["token"]),
        (&Value::from("http://mesh2.example:50053"), &Value::from("<redacted>"))
    );
    mesh.run(&["config", "use-context", "far"]).ok();
    assert_eq!(mesh.run(&["config", "current-context"]).ok(), "far\n");
    // The flag and the environment choose a context for one command.
    mesh.run(&["--context", "test", "status"]).ok();
    mesh.command(&["status"]).env("AGENTMESH_CONTEXT", "test").output().map(common::Run::from).unwrap().ok();
    mesh.run(&["config", "delete-context", "far"]).ok();
    mesh.run(&["config", "use-context", "test"]).ok();
    mesh.run(&["ws", "list"]).ok();

    for (shell, marker) in [("bash", "_agentmesh()"), ("zsh", "#compdef agentmesh"), ("fish", "complete -c agentmesh")]
    {
        let script = mesh.run(&["completion", shell]).ok();
        assert!(script.contains(marker), "{shell}: {}", &script[..script.len().min(200)]);
    }
}

#[test]
fn failures_are_one_line_with_the_documented_exit_code() {
    let mesh = DevMesh::start();
    let unknown_id = "00000000-0000-4000-8000-000000000000";

    // A wrong token: 4, given with the flag or the environment.
    mesh.run(&["--token", "wrong", "ws", "list"]).fails(4, "the token given is neither");
    let wrong = mesh.command(&["ws", "list"]).env("AGENTMESH_TOKEN", "wrong").output().unwrap();
    common::Run::from(wrong).fails(4, "not allowed: ");

    // Not found: 3, whether the mesh or the command line finds nothing.
    mesh.run(&["ws", "get", unknown_id]).fails(3, unknown_id);
    mesh.run(&["ws", "get", "nobody"]).fails(3, "no workspace is named \"nobody\"");
    mesh.run(&["send", "nobody", "hi"]).fails(3, "nobody");

    // A malformed id or an impossible request: 6, with the service's reason.
    mesh.run(&["sched", "get", "not-an-id"]).fails(6, "must be a UUID");
    mesh.run(&["sched", "create", "--workspace", unknown_id, "--name", "x", "--cron", "61 * * * *", "--text", "t"])
        .fails(6, "cron");

    // A stopped workspace takes no messages: 6, saying why.
    mesh.run(&["ws", "create", "--name", "remote", "--runtime", "external"]).ok();
    mesh.run(&["ws", "stop", "remote"]).ok();
    mesh.run(&["send", "remote", "hi"]).fails(6, "is stopped");
    // What cannot be done to an external agent says so, with the hint.
    mesh.run(&["ws", "exec", "remote", "--", "ls"]).fails(6, "hint: ");

    // Wrong usage and configuration: 2, naming what to change.
    mesh.run(&["ws", "list", "--status", "asleep"]).fails(2, "unknown status \"asleep\"");
    mesh.run(&["--context", "nowhere", "status"]).fails(2, "no context named \"nowhere\"");
    let empty = tempfile::tempdir().unwrap();
    let no_config = mesh.command(&["ws", "list"]).env("AGENTMESH_CONFIG", empty.path().join("none.toml")).output();
    common::Run::from(no_config.unwrap()).fails(2, "agentmesh dev");
    let broken = empty.path().join("broken.toml");
    std::fs::write(&broken, "current_context = [\n").unwrap();
    let broken_config = mesh.command(&["ws", "list"]).env("AGENTMESH_CONFIG", &broken).output().unwrap();
    common::Run::from(broken_config).fails(2, &broken.display().to_string());

    // Nothing answers: 5, naming the address.
    let down = "http://127.0.0.1:9";
    let set = ["config", "set-context", "down", "--registry", down, "--provisioner", down, "--gateway", down];
    mesh.run(&[&set[..], &["--scheduler", down]].concat()).ok();
    mesh.run(&["--context", "down", "ws", "list"]).fails(5, "cannot reach http://127.0.0.1:9");
    let status = mesh.run(&["--context", "down", "status"]);
    assert_eq!(status.code, 5, "status fails when a service is down: {status:?}");
}
