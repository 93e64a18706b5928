//! ROOT rebuilt: stopped, its data directory wiped, started again and published to, so its topic has a
//! new uid. Every descendant notices the other history and takes a full refresh instead of mixing the
//! two: LOCAL, and the TCP consumer on it, end with exactly ROOT's new content and uid.

mod tree;

use tree::{BackgroundConsumer, Tree};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descendants_of_a_rebuilt_root_refresh_to_its_new_history() {
    let mut tree = Tree::new();
    tree.start_registry("registry.sqlite").await;
    tree.add_started("root", "root", &[]).await;
    let chain = [("l2", "l2", "root"), ("l3", "l3", "l2"), ("pos", "pos", "l3"), ("local", "local", "pos")];
    for (id, level, parent) in chain {
        tree.add_started(id, level, &[]).await;
        tree.wait_streaming(id, Some(parent)).await;
    }
    let consumer = BackgroundConsumer::start(tree.nodes["local"].tcp, "till-app", "config").await;
    tree.inject("root", "config", 1000, 100).await;
    let old = tree.range("root", "config").await;
    for (id, _, _) in chain {
        tree.wait_copy(id, "config", &old.uid, 1000).await;
    }
    consumer.wait_for(&old.uid, 1000).await;

    let status = tree.stop("root");
    assert!(status.success(), "{status}");
    std::fs::remove_dir_all(&tree.nodes["root"].data_dir).unwrap();
    tree.start("root").await;
    tree.inject("root", "config", 500, 60).await;
    let new = tree.range("root", "config").await;
    assert_ne!(new.uid, old.uid);
    println!("    root: {new} (was {})", old.uid);
    for (id, _, _) in chain {
        tree.wait_copy(id, "config", &new.uid, 500).await;
        tree.assert_same_copy(id, "config", &new).await;
        assert!(tree.log_of(id).contains("full refresh from the parent"), "{id} did not refresh");
    }
    let copy = consumer.wait_for(&new.uid, 500).await;
    assert_eq!((copy.n_records, copy.gaps, copy.duplicates), (500, 0, 0), "{copy:?}");
    assert!(copy.refreshes >= 1, "{copy:?}");
    tree.assert_all_running();
}
