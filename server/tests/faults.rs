//! The server killed (-9) at random moments (after a random number of
//! acknowledged writes) while four writers create and delete slot maps
//! through the API, 20 times over one database: after
//! each restart every acknowledged write is there, a write that was
//! refused or never answered is either wholly there or not at all, and
//! the map is the same whether asked for by its bank or its client slot.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;

const WRITERS: u32 = 4;
const SLOTS_PER_WRITER: u32 = 6;
const RESTARTS: usize = 20;

/// What a slot is known to hold: a map or not, or either (a write was in
/// flight when the server died).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Present,
    Absent,
    Either,
}

/// Writer `w` owns bank slots 1:(w × 6 + i) and client slots (10 + w):i,
/// so the writes to one slot come from one writer, one at a time.
fn slots(w: u32, i: u32) -> ((u32, u32), (u32, u32)) {
    ((1, w * SLOTS_PER_WRITER + i), (10 + w, i))
}

/// A small deterministic generator (xorshift), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Creates and deletes its own maps until a call fails for want of the
/// server; counts each acknowledged write in `progress` (shared by the
/// writers of a round); returns what it knows of each of its slots, and
/// how many of its writes were acknowledged.
async fn writer(
    mut api: RemsimServiceClient<Channel>,
    w: u32,
    mut known: Vec<Known>,
    seed: u64,
    progress: Arc<watch::Sender<usize>>,
) -> (Vec<Known>, usize) {
    let mut rng = Rng(seed | 1);
    let mut acknowledged = 0;
    loop {
        let i = rng.below(u64::from(SLOTS_PER_WRITER)) as usize;
        let (bank, client) = slots(w, i as u32);
        let before = known[i];
        let create = match before {
            Known::Present => false,
            Known::Absent => true,
            Known::Either => rng.below(2) == 0,
        };
        let call = async {
            if create {
                api.create_slotmap(pb::CreateSlotmapRequest::new(bank, client))
                    .await
                    .map(|_| ())
            } else {
                api.delete_slotmap(by_bank(bank)).await.map(|_| ())
            }
        };
        let answer = tokio::time::timeout(GUARD, call)
            .await
            .expect("an answer or an error in time");
        known[i] = match answer {
            Ok(()) => {
                acknowledged += 1;
                progress.send_modify(|n| *n += 1);
                if create {
                    Known::Present
                } else {
                    Known::Absent
                }
            }
            // Only after an unanswered write can the slot differ from what
            // this writer believes; the refusal then says what is there.
            Err(s) if s.code() == Code::AlreadyExists && before == Known::Either => Known::Present,
            Err(s) if s.code() == Code::NotFound && before == Known::Either => Known::Absent,
            Err(s) if s.code() == Code::Unavailable || s.code() == Code::Unknown => {
                // The server died with this write in flight: done or not.
                known[i] = Known::Either;
                return (known, acknowledged);
            }
            Err(s) => panic!("writer {w}, slot {i}: unexpected {s:?} while {before:?}"),
        };
    }
}

/// The maps of every writer's slots as the restarted server has them,
/// checked for consistency (by bank == by client == listed).
async fn observe(api: &mut RemsimServiceClient<Channel>) -> BTreeMap<(u32, u32), bool> {
    let listed = slotmaps(api).await;
    let mut present = BTreeMap::new();
    for w in 0..WRITERS {
        for i in 0..SLOTS_PER_WRITER {
            let (bank, client) = slots(w, i);
            let by_bank = api
                .get_slotmap(pb::GetSlotmapRequest {
                    key: Some(pb::get_slotmap_request::Key::Bank(pb::BankSlot {
                        bank_id: bank.0,
                        slot_nr: bank.1,
                    })),
                })
                .await;
            let by_client = api
                .get_slotmap(pb::GetSlotmapRequest {
                    key: Some(pb::get_slotmap_request::Key::Client(pb::ClientSlot {
                        client_id: client.0,
                        slot_nr: client.1,
                    })),
                })
                .await;
            let in_list = listed
                .iter()
                .any(|m| m.bank.is_some_and(|b| (b.bank_id, b.slot_nr) == bank));
            match (by_bank, by_client) {
                (Ok(a), Ok(b)) => {
                    let (a, b) = (a.into_inner(), b.into_inner());
                    assert_eq!(a, b, "bank {bank:?} and client {client:?} disagree");
                    assert!(in_list, "{bank:?} found but not listed");
                    present.insert(bank, true);
                }
                (Err(a), Err(b)) if a.code() == Code::NotFound && b.code() == Code::NotFound => {
                    assert!(!in_list, "{bank:?} listed but not found");
                    present.insert(bank, false);
                }
                (a, b) => panic!("half a map at {bank:?}/{client:?}: {a:?} / {b:?}"),
            }
        }
    }
    assert_eq!(
        listed.len(),
        present.values().filter(|p| **p).count(),
        "no other maps"
    );
    present
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_at_random_moments() {
    let dir = TempDir::new("kill9-writers");
    let db = dir.path("remsim.db");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut known: Vec<Vec<Known>> =
        vec![vec![Known::Absent; SLOTS_PER_WRITER as usize]; WRITERS as usize];
    let mut acknowledged = 0usize;
    for round in 0..RESTARTS {
        let mut server = Server::start(&db).await;
        let mut api = server.api().await;
        let present = observe(&mut api).await;
        for w in 0..WRITERS {
            for i in 0..SLOTS_PER_WRITER {
                let there = present[&slots(w, i).0];
                let slot = &mut known[w as usize][i as usize];
                match *slot {
                    Known::Present => {
                        assert!(there, "round {round}: acknowledged create of {w}/{i} lost")
                    }
                    Known::Absent => assert!(
                        !there,
                        "round {round}: acknowledged delete of {w}/{i} undone"
                    ),
                    Known::Either => {}
                }
                *slot = if there { Known::Present } else { Known::Absent };
            }
        }
        let (progress, mut written) = watch::channel(0usize);
        let progress = Arc::new(progress);
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let api = api.clone();
                let mine = known[w as usize].clone();
                tokio::spawn(writer(api, w, mine, rng.next(), progress.clone()))
            })
            .collect();
        // A random moment, counted in writes rather than time: after 1 to
        // 60 acknowledged ones, while others are in flight.
        let moment = 1 + rng.below(60) as usize;
        tokio::time::timeout(GUARD, written.wait_for(|n| *n >= moment))
            .await
            .expect("the writers make progress")
            .expect("a writer is running");
        server.kill9();
        for (w, task) in writers.into_iter().enumerate() {
            let (after, acked) = task.await.expect("writer");
            acknowledged += acked;
            known[w] = after;
        }
    }
    // A last look after the last kill.
    let server = Server::start(&db).await;
    let mut api = server.api().await;
    let present = observe(&mut api).await;
    for w in 0..WRITERS {
        for i in 0..SLOTS_PER_WRITER {
            let there = present[&slots(w, i).0];
            match known[w as usize][i as usize] {
                Known::Present => assert!(there, "acknowledged create of {w}/{i} lost"),
                Known::Absent => assert!(!there, "acknowledged delete of {w}/{i} undone"),
                Known::Either => {}
            }
        }
    }
    eprintln!("{acknowledged} writes acknowledged over {RESTARTS} kills");
    assert!(
        acknowledged >= RESTARTS,
        "the writers got work done between kills"
    );
}

/// The database on a full file system (a 1 MB tmpfs of the test's own mount
/// namespace): writes are refused with UNAVAILABLE naming the cause, reads
/// and RSPRO go on, nothing acknowledged is lost, nothing refused is half
/// there, and writes work again once there is room, without a restart.
#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_until_there_is_room_again() {
    if !remsim_testing::in_namespace(
        "a_full_disk_refuses_writes_clearly_until_there_is_room_again",
        "REMSIM_TEST_DISK_FULL_INNER",
    ) {
        return;
    }
    let dir = TempDir::new("disk-full");
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir.0)
        .status()
        .expect("mount");
    assert!(mount.success(), "mount tmpfs");
    let db = dir.path("remsim.db");
    let server = Server::start(&db).await;
    let mut api = server.api().await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (10, 0)))
        .await
        .expect("a write while there is room");

    // Fill the file system to the last byte.
    let filler = dir.path("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.write_all(&[0u8]);
    }
    // Creates until the write-ahead log needs room it cannot get (it may
    // still have some from before): refused, clearly, and not applied.
    let mut refused = None;
    let mut acknowledged = vec![(1, 0)];
    for slot in 1..200u32 {
        match api
            .create_slotmap(pb::CreateSlotmapRequest::new((1, slot), (10, slot)))
            .await
        {
            Ok(_) => acknowledged.push((1, slot)),
            Err(status) => {
                refused = Some((slot, status));
                break;
            }
        }
    }
    let (slot, status) = refused.expect("a write refused on a full disk");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("full"),
        "the cause is named: {}",
        status.message()
    );
    // Reads and RSPRO go on; the refused map is not there.
    let listed = slotmaps(&mut api).await;
    let banks: Vec<(u32, u32)> = listed
        .iter()
        .filter_map(|m| m.bank.map(|b| (b.bank_id, b.slot_nr)))
        .collect();
    assert_eq!(banks, acknowledged, "acknowledged maps, and no other");
    let _bankd = bankd(&server, 2, 4).await;

    // Room again: writes work without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, slot), (10, slot)))
        .await
        .expect("the refused write, now that there is room");
    assert_eq!(slotmaps(&mut api).await.len(), acknowledged.len() + 1);
    drop(api);
    drop(server);
    let _ = std::process::Command::new("umount").arg(&dir.0).status();
}

fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?}");
}

/// The database on an ext4 file system (a loop device of the test's own
/// mount namespace, mounted errors=remount-ro) that fails under the
/// running server: the kernel makes it read-only, as it does after a disk
/// error. Writes are refused with UNAVAILABLE naming the cause, reads and
/// RSPRO go on; after the operator's repair (unmount, e2fsck, mount) a
/// new server has every acknowledged map and writes again. Commits are
/// fsync'd (`--db-sync full`): a failing file system may lose what was
/// only in its cache, as a power loss would.
#[tokio::test]
async fn a_file_system_gone_read_only_refuses_writes_clearly_and_loses_nothing() {
    if !remsim_testing::in_namespace(
        "a_file_system_gone_read_only_refuses_writes_clearly_and_loses_nothing",
        "REMSIM_TEST_READ_ONLY_INNER",
    ) {
        return;
    }
    let dir = TempDir::new("read-only");
    let image = dir.path("disk.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(16 << 20))
        .expect("image");
    let (image, mnt) = (
        image.to_string_lossy().into_owned(),
        dir.path("mnt").to_string_lossy().into_owned(),
    );
    std::fs::create_dir(&mnt).expect("mount point");
    run("mkfs.ext4", &["-q", "-F", &image]);
    let mount = || run("mount", &["-o", "loop,errors=remount-ro", &image, &mnt]);
    mount();
    let device = String::from_utf8(
        std::process::Command::new("findmnt")
            .args(["-no", "SOURCE", &mnt])
            .output()
            .expect("findmnt")
            .stdout,
    )
    .expect("utf-8");
    let device = device.trim().trim_start_matches("/dev/").to_string();

    let db = std::path::Path::new(&mnt).join("remsim.db");
    let server = Server::start_with(&db, &["--db-sync", "full"]).await;
    let mut api = server.api().await;
    for slot in 0..3 {
        api.create_slotmap(pb::CreateSlotmapRequest::new((1, slot), (10, slot)))
            .await
            .expect("a write while the disk is fine");
    }

    // The file system fails: the kernel turns it read-only.
    std::fs::write(format!("/sys/fs/ext4/{device}/trigger_fs_error"), "1")
        .expect("ext4 error injected");
    let status = api
        .create_slotmap(pb::CreateSlotmapRequest::new((1, 3), (10, 3)))
        .await
        .expect_err("a write on a read-only file system");
    eprintln!("refused: {}", status.message());
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("Read-only file system"),
        "the cause is named: {}",
        status.message()
    );
    let deleted = api.delete_slotmap(by_bank((1, 0))).await;
    assert_eq!(deleted.expect_err("a delete too").code(), Code::Unavailable);
    // Reads and RSPRO go on, with what was acknowledged.
    let banks = |maps: Vec<pb::Slotmap>| -> Vec<(u32, u32)> {
        maps.iter()
            .filter_map(|m| m.bank.map(|b| (b.bank_id, b.slot_nr)))
            .collect()
    };
    let acknowledged = vec![(1, 0), (1, 1), (1, 2)];
    assert_eq!(banks(slotmaps(&mut api).await), acknowledged);
    let _bankd = bankd(&server, 2, 4).await;

    // The operator's repair, then a new server on the same file.
    drop(api);
    drop(server);
    run("umount", &[&mnt]);
    let fsck = std::process::Command::new("e2fsck")
        .args(["-f", "-y", &image])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("e2fsck");
    // 0: clean, 1: errors corrected (the injected error is recorded).
    assert!(matches!(fsck.code(), Some(0 | 1)), "e2fsck: {fsck:?}");
    mount();
    let server = Server::start_with(&db, &["--db-sync", "full"]).await;
    let mut api = server.api().await;
    assert_eq!(banks(slotmaps(&mut api).await), acknowledged, "none lost");
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 3), (10, 3)))
        .await
        .expect("the refused write, on the repaired file system");
    drop(api);
    drop(server);
    run("umount", &[&mnt]);
}
