//! The clock reservation's own file, beside the RocksDB files.
//!
//! A node persists a reservation ahead of every timestamp it issues, twice a second, and must
//! not answer before it is on disk. Stored as a synced RocksDB write, it held RocksDB's write
//! queue for the whole `fdatasync`, which also wrote out the write-ahead log's unsynced pages:
//! on the development machine the storage writer was sampled waiting 249 ms behind one.
//! Here it is one small file of its own, so its sync writes out only itself and no record
//! write ever waits for it.
//!
//! The file is 64 bytes: two 32-byte slots written in turn, each holding a sequence number, the
//! reservation and a checksum. A crash in the middle of a write can tear only the slot being
//! written; the other still holds the previous reservation, as if the interrupted write had
//! never started (a reservation is made only once [`ReservationFile::store`] has returned).

use crate::StorageError;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// The file's name in the database directory (RocksDB leaves files it does not name alone).
pub const FILE_NAME: &str = "RINGKV-CLOCK";
const SLOT: usize = 32;
const MAGIC: &[u8; 8] = b"RKVCLK01";

/// What one slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// All zero: never written.
    Empty,
    /// Intact: `(sequence, reservation)`.
    Valid(u64, u64),
    /// Neither: a write that did not finish, or damage.
    Torn,
}

fn encode(seq: u64, value: u64) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&seq.to_le_bytes());
    slot[16..24].copy_from_slice(&value.to_le_bytes());
    let sum = blake3::hash(&slot[..24]);
    slot[24..].copy_from_slice(&sum.as_bytes()[..8]);
    slot
}

fn decode(slot: &[u8]) -> Slot {
    if slot.iter().all(|&b| b == 0) {
        return Slot::Empty;
    }
    if &slot[..8] != MAGIC || blake3::hash(&slot[..24]).as_bytes()[..8] != slot[24..] {
        return Slot::Torn;
    }
    let seq = u64::from_le_bytes(slot[8..16].try_into().expect("8 bytes"));
    let value = u64::from_le_bytes(slot[16..24].try_into().expect("8 bytes"));
    Slot::Valid(seq, value)
}

/// The reservation file of one database, open for the node's lifetime.
#[derive(Debug)]
pub struct ReservationFile {
    /// The file, the last sequence number written and the reservation it holds.
    state: Mutex<(File, u64, u64)>,
}

impl ReservationFile {
    /// Opens the file in `dir`, creating it (two empty slots, synced with its directory entry)
    /// if it does not exist. Refuses a file whose slots are both damaged: the reservation it
    /// held is unknown, and starting the clock below it could reissue old timestamps.
    pub fn open(dir: &Path) -> Result<ReservationFile, StorageError> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        if file.metadata()?.len() < 2 * SLOT as u64 {
            // New (or cut short by a crash while it was being created, when nothing had been
            // reserved in it yet): fixed at its full size, so a sync never has to write its size.
            file.set_len(2 * SLOT as u64)?;
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        let mut bytes = [0u8; 2 * SLOT];
        file.read_exact_at(&mut bytes, 0)?;
        let slots = [decode(&bytes[..SLOT]), decode(&bytes[SLOT..])];
        let newest = slots
            .iter()
            .filter_map(|s| match s {
                Slot::Valid(seq, value) => Some((*seq, *value)),
                _ => None,
            })
            .max();
        let (seq, value) = match (newest, slots) {
            (Some(newest), _) => newest,
            // Never written, or the very first write tore: nothing was reserved yet.
            (None, slots) if slots.contains(&Slot::Empty) => (0, 0),
            (None, _) => {
                return Err(StorageError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: both slots of the clock reservation file are damaged, so the node \
                         cannot know which timestamps it already issued",
                        path.display()
                    ),
                )))
            }
        };
        Ok(ReservationFile {
            state: Mutex::new((file, seq, value)),
        })
    }

    /// The stored reservation (0 if none was ever stored).
    pub fn load(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).2
    }

    /// Stores `value` (or keeps the stored reservation if it is larger: a reservation never goes
    /// back) and syncs it before returning. Writes the slot the last write did not use.
    pub fn store(&self, value: u64) -> Result<(), StorageError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (file, seq, stored) = &mut *state;
        let value = value.max(*stored);
        let next = *seq + 1;
        let offset = (next % 2) * SLOT as u64;
        file.write_all_at(&encode(next, value), offset)?;
        file.sync_data()?;
        *seq = next;
        *stored = value;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(FILE_NAME)).expect("read")
    }

    fn write_bytes(dir: &Path, offset: usize, bytes: &[u8]) {
        let mut all = slot_bytes(dir);
        all[offset..offset + bytes.len()].copy_from_slice(bytes);
        std::fs::write(dir.join(FILE_NAME), all).expect("write");
    }

    #[test]
    fn a_new_file_holds_nothing_and_a_stored_reservation_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let file = ReservationFile::open(dir.path()).unwrap();
        assert_eq!(file.load(), 0);
        assert_eq!(slot_bytes(dir.path()).len(), 64);
        file.store(10).unwrap();
        file.store(20).unwrap();
        file.store(30).unwrap();
        assert_eq!(file.load(), 30);
        drop(file);
        let file = ReservationFile::open(dir.path()).unwrap();
        assert_eq!(file.load(), 30);
        // Still two slots: the writes alternate instead of appending.
        assert_eq!(slot_bytes(dir.path()).len(), 64);
        file.store(40).unwrap();
        assert_eq!(ReservationFile::open(dir.path()).unwrap().load(), 40);
    }

    #[test]
    fn a_reservation_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = ReservationFile::open(dir.path()).unwrap();
        file.store(50).unwrap();
        file.store(7).unwrap();
        assert_eq!(file.load(), 50);
        drop(file);
        assert_eq!(ReservationFile::open(dir.path()).unwrap().load(), 50);
    }

    #[test]
    fn a_torn_last_write_leaves_the_reservation_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = ReservationFile::open(dir.path()).unwrap();
        file.store(100).unwrap(); // sequence 1: slot 1
        file.store(200).unwrap(); // sequence 2: slot 0
        drop(file);
        // Half of the newest slot's write reached the disk.
        let torn = encode(3, 300);
        write_bytes(dir.path(), SLOT, &torn[..12]);
        let file = ReservationFile::open(dir.path()).unwrap();
        assert_eq!(file.load(), 200);
        // The next write goes to the other slot than the intact one.
        file.store(400).unwrap();
        assert_eq!(decode(&slot_bytes(dir.path())[..SLOT]), Slot::Valid(2, 200));
        assert_eq!(ReservationFile::open(dir.path()).unwrap().load(), 400);
    }

    #[test]
    fn a_torn_first_write_means_nothing_was_reserved() {
        let dir = tempfile::tempdir().unwrap();
        drop(ReservationFile::open(dir.path()).unwrap());
        write_bytes(dir.path(), SLOT, &encode(1, 100)[..20]);
        assert_eq!(ReservationFile::open(dir.path()).unwrap().load(), 0);
    }

    #[test]
    fn two_damaged_slots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = ReservationFile::open(dir.path()).unwrap();
        file.store(100).unwrap();
        file.store(200).unwrap();
        drop(file);
        write_bytes(dir.path(), 20, b"xx");
        write_bytes(dir.path(), SLOT + 20, b"yy");
        let err = ReservationFile::open(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("both slots") && message.contains(FILE_NAME),
            "names the file and the reason: {message}"
        );
    }
}
