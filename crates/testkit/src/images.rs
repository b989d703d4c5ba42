//! The agentmesh binaries, statically linked, and the local images that
//! carry them: `agentmesh/echo-agent:dev` for tests that run agents as
//! containers, and every service's image for tests of the Compose stack.
//!
//! All come from `deploy/images/build.sh`, run at most once per test
//! process for each and serialized across test processes by a file lock.
//! The script is incremental (cargo and the Docker build cache), so where CI
//! already ran it the helpers only confirm everything is up to date; from a
//! clean checkout the first call builds (minutes).

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The echo agent wrapped by the shim; container arguments go to the agent.
pub const ECHO_AGENT_IMAGE: &str = "agentmesh/echo-agent:dev";

/// Paths of the statically linked binaries.
#[derive(Debug)]
pub struct StaticBinaries {
    pub echo_agent: PathBuf,
    pub shim: PathBuf,
    pub registry: PathBuf,
    pub provisioner: PathBuf,
    pub gateway: PathBuf,
    pub scheduler: PathBuf,
}

/// The static binaries, built first if needed.
pub fn static_binaries() -> &'static StaticBinaries {
    static BINARIES: OnceLock<StaticBinaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let dir = PathBuf::from(run_build_script(&["--binaries-only"]));
        StaticBinaries {
            echo_agent: dir.join("agentmesh-echo-agent"),
            shim: dir.join("agentmesh-agent-shim"),
            registry: dir.join("agentmesh-registry"),
            provisioner: dir.join("agentmesh-provisioner"),
            gateway: dir.join("agentmesh-a2a-gateway"),
            scheduler: dir.join("agentmesh-scheduler"),
        }
    })
}

/// [`ECHO_AGENT_IMAGE`], built first if needed (requires Docker).
pub fn echo_agent_image() -> &'static str {
    static IMAGE: OnceLock<()> = OnceLock::new();
    IMAGE.get_or_init(|| {
        run_build_script(&["--agents-only"]);
    });
    ECHO_AGENT_IMAGE
}

/// Every image the Compose stack runs: the four services', the agents', and
/// the stand-ins for PostgreSQL and the balancer where the official images
/// cannot be had (requires Docker; the stand-ins need debootstrap).
pub fn mesh_images() {
    static IMAGES: OnceLock<()> = OnceLock::new();
    IMAGES.get_or_init(|| {
        run_build_script(&[]);
    });
}

/// The repository's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the build script under an exclusive lock and returns the last line
/// it printed on stdout.
fn run_build_script(args: &[&str]) -> String {
    let root = workspace_root();
    let lock_dir = root.join("target");
    std::fs::create_dir_all(&lock_dir).expect("creating target/");
    let lock = File::create(lock_dir.join(".agentmesh-images.lock")).expect("creating the build lock file");
    lock.lock().expect("taking the build lock");
    eprintln!("agentmesh-testkit: running deploy/images/build.sh {} (the first build takes minutes)", args.join(" "));
    let output = Command::new("bash")
        .arg(root.join("deploy/images/build.sh"))
        .args(args)
        .current_dir(&root)
        .output()
        .expect("running deploy/images/build.sh");
    drop(lock);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "deploy/images/build.sh {args:?} failed ({}):\n{}\n{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout.lines().last().expect("build.sh prints its result").trim().to_owned()
}
