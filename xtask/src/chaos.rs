//! `cargo xtask chaos [KILLS [SEED]]`: the crash campaign (see `canup_tests::chaos`).

use anyhow::Result;

use crate::util::{self, RabbitMq, build_canup, build_guests};

/// `seed`: the current time when not given.
pub fn run(kills: usize, seed: Option<u64>) -> Result<()> {
    let seed: u64 = match seed {
        Some(s) => s,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
    };
    build_guests()?;
    let canup = build_canup()?;
    let work = canup_tests::chaos::work_dir("chaos")?;
    let repo = work.join("repo");
    canup_tests::publish_steps(&canup, &repo, &canup_tests::target_dir().join("dev-keys"))?;
    util::ensure_simulated_host_tools()?;
    let _rabbitmq = RabbitMq::start()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        canup_tests::rabbitmq::Admin::new().setup_canopsis_once().await?;
        let repo_url = canup_tests::repo_server::serve_repo(repo.clone(), Default::default()).await;
        let stub = canup_tests::target_dir().join("debug/canup-sim");
        let setup = canup_tests::chaos::Setup { canup, stub, repo, repo_url, work };
        // Over the whole run and a little beyond, so some kills come after the end.
        canup_tests::chaos::campaign(&setup, kills, seed, 1.1).await.map(|_| ())
    })
}
