//! The reduced crash campaign: five kills of the demo upgrade, each resumed to the end state
//! of an uninterrupted run (see `canup_tests::chaos`; `cargo xtask chaos` runs fifty).

use canup_tests::chaos::{Setup, campaign, published, work_dir};
use canup_tests::repo_server::{Control, serve_repo};
use canup_tests::{canup_bin, rabbitmq::Admin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_kills_four_at_random_moments_one_inside_yum_each_resume_to_the_uninterrupted_end_state() {
    let work = work_dir("chaos-test").unwrap();
    let repo = work.join("repo");
    published(&repo).unwrap();
    Admin::new().setup_canopsis_once().await.unwrap();
    let repo_url = serve_repo(repo.clone(), Control::default()).await;
    let setup = Setup { canup: canup_bin(), stub: canup_tests::sim_bin(), repo, repo_url, work };
    // A fixed seed: the same four random moments on every run, spread over the first 70% of
    // the upgrade (a trial may run faster than the reference); the fifth kill comes while
    // `yum update` runs.
    let trials = campaign(&setup, 5, 0x5eed_cafe, 0.7).await.unwrap();
    assert_eq!(trials.len(), 5);
    assert!(trials.iter().filter(|t| t.killed).count() >= 4, "the moments fell inside the run: {trials:#?}");
    let in_yum = &trials[4];
    assert!(in_yum.killed, "{in_yum:#?}");
    assert_eq!(in_yum.in_flight.len(), 1, "the resumed run took yum's outcome from its receipt: {in_yum:#?}");
    assert!(in_yum.in_flight[0].starts_with("/usr/bin/yum "), "{in_yum:#?}");
}
