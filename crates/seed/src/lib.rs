//! The cloud-init NoCloud seed disk of a cloud-image sandbox: a FAT image whose volume label is
//! `CIDATA` (cloud-init looks for `cidata` or `CIDATA`), holding `meta-data`, `user-data`,
//! `network-config` (left out when there is none) and extra files, all at its root. The guest's
//! cloud-init reads it at boot. meta-data and network-config are JSON, and user-data is
//! `#cloud-config` followed by a JSON object: cloud-init parses all three as YAML, of which a JSON
//! object is a subset. File times are the FAT epoch, 1980-01-01, so the same seed gives the same
//! image.

use std::borrow::Cow;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};
use serde_json::{Value, json};

/// Volume label cloud-init's NoCloud datasource looks for.
pub const VOLUME_LABEL: &str = "CIDATA";
/// Name of the meta-data file.
pub const META_DATA: &str = "meta-data";
/// Name of the user-data file.
pub const USER_DATA: &str = "user-data";
/// Name of the network-config file.
pub const NETWORK_CONFIG: &str = "network-config";
/// First line of user-data in cloud-config form.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config\n";

const MIB: u64 = 1 << 20;
/// Smallest image written.
const MIN_IMAGE_BYTES: u64 = 2 * MIB;
/// Room for the boot sector, both FATs and the root directory.
const HEADROOM_BYTES: u64 = MIB;
/// Each file is counted as a whole number of these (no larger than fatfs's clusters at these sizes).
const CLUSTER_ROUND: u64 = 4096;

/// What the guest learns from its seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// meta-data `instance-id`. A new id makes cloud-init treat the guest as a new instance: new
    /// host keys, hostname applied again, per-instance modules run again.
    pub instance_id: String,
    /// meta-data `local-hostname` and user-data `hostname`: one RFC 1123 label, lower case.
    pub hostname: String,
    /// user-data top-level `ssh_authorized_keys`, which cloud-init gives the default user; with
    /// `disable_root: false` root gets them as well.
    pub ssh_authorized_keys: Vec<String>,
    /// user-data `bootcmd`: shell strings cloud-init runs with `sh` on every boot.
    pub bootcmd: Vec<String>,
    /// user-data `mounts`.
    pub mounts: Vec<Mount>,
    /// Extra files at the root of the image, such as the guest agent `nestbox-agent`.
    pub files: Vec<SeedFile>,
    /// What network-config says.
    pub network: NetworkConfig,
}

/// One user-data `mounts` entry: `[device, path, "auto", "defaults,nofail[,ro]"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What to mount, as cloud-init's `mounts` module takes it.
    pub device: String,
    /// Mount point in the guest.
    pub path: String,
    /// Mount read-only.
    pub readonly: bool,
}

/// A file at the root of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFile {
    /// A plain file name: 1 to 255 of `A-Z a-z 0-9 . _ + -`, not `.` or `..`, unique in the
    /// image ignoring case (FAT ignores it), none of the three cloud-init file names.
    pub name: String,
    /// The file's bytes.
    pub contents: Vec<u8>,
}

/// The guest's network configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkConfig {
    /// DHCP (v4) on every ethernet interface: a version 2 config matching names `e*`.
    Dhcp,
    /// No network-config file: cloud-init falls back to DHCP on its first NIC.
    None,
}

/// Why a seed could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// An extra file's name breaks a rule of [`SeedFile::name`].
    #[error("seed file name {name:?} is refused: {reason}")]
    InvalidFileName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The hostname is not one RFC 1123 label.
    #[error(
        "hostname {hostname:?} is refused: it must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"
    )]
    InvalidHostname {
        /// The hostname given.
        hostname: String,
    },
    /// A file-system call on the host failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// fatfs failed while building the image in memory.
    #[error("cannot {action} in the seed image: {source}")]
    Fat {
        /// What was being done, naming the file.
        action: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl Seed {
    /// meta-data: `{"instance-id": .., "local-hostname": ..}`.
    pub fn meta_data(&self) -> String {
        json!({ "instance-id": self.instance_id, "local-hostname": self.hostname }).to_string()
    }

    /// user-data: [`CLOUD_CONFIG_HEADER`] then a JSON object; empty lists are left out.
    pub fn user_data(&self) -> String {
        let mut config = json!({ "hostname": self.hostname, "disable_root": false });
        let map = config.as_object_mut().expect("a JSON object");
        if !self.ssh_authorized_keys.is_empty() {
            map.insert("ssh_authorized_keys".into(), json!(self.ssh_authorized_keys));
        }
        if !self.bootcmd.is_empty() {
            map.insert("bootcmd".into(), json!(self.bootcmd));
        }
        if !self.mounts.is_empty() {
            let mounts: Vec<Value> = self
                .mounts
                .iter()
                .map(|m| {
                    let options = if m.readonly { "defaults,nofail,ro" } else { "defaults,nofail" };
                    json!([m.device, m.path, "auto", options])
                })
                .collect();
            map.insert("mounts".into(), Value::Array(mounts));
        }
        format!("{CLOUD_CONFIG_HEADER}{config}")
    }

    /// network-config (version 2, as JSON), or `None` for [`NetworkConfig::None`], when the
    /// image has no network-config file.
    pub fn network_config(&self) -> Option<String> {
        match self.network {
            NetworkConfig::Dhcp => Some(
                json!({
                    "version": 2,
                    "ethernets": { "all-ethernet": { "match": { "name": "e*" }, "dhcp4": true } }
                })
                .to_string(),
            ),
            NetworkConfig::None => None,
        }
    }

    /// Checks the hostname and the extra files' names; [`Seed::write`] calls it first.
    pub fn validate(&self) -> Result<(), SeedError> {
        validate_hostname(&self.hostname)?;
        let mut seen: Vec<String> = [META_DATA, USER_DATA, NETWORK_CONFIG].map(String::from).to_vec();
        for file in &self.files {
            let refuse = |reason| Err(SeedError::InvalidFileName { name: file.name.clone(), reason });
            let name = &file.name;
            if name.is_empty() || name.len() > 255 {
                return refuse("it must be 1 to 255 characters");
            }
            if name == "." || name == ".." {
                return refuse("it is a directory name");
            }
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)) {
                return refuse("only A-Z, a-z, 0-9, '.', '_', '+' and '-' are allowed");
            }
            let folded = name.to_ascii_lowercase();
            if seen.contains(&folded) {
                return refuse("another file in the seed has this name (FAT ignores case)");
            }
            seen.push(folded);
        }
        Ok(())
    }

    /// Writes the seed image to `path`, replacing any file there: at least 2 MiB, content plus
    /// headroom. It is written to a temporary file (mode 0600) in the same directory and renamed
    /// into place, so a crash leaves no half seed under `path`.
    pub fn write(&self, path: &Path) -> Result<(), SeedError> {
        let image = self.image()?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| SeedError::Io { action, path, source }
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .suffix(".seed")
            .tempfile_in(dir)
            .map_err(io_err("create a temporary file in", dir))?;
        tmp.write_all(&image).map_err(io_err("write", tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err("sync", tmp.path()))?;
        tmp.persist(path).map_err(|e| io_err("rename the seed to", path)(e.error))?;
        Ok(())
    }

    /// The whole image, built in memory.
    fn image(&self) -> Result<Vec<u8>, SeedError> {
        self.validate()?;
        let mut entries: Vec<(&str, Cow<'_, [u8]>)> = vec![
            (META_DATA, Cow::Owned(self.meta_data().into_bytes())),
            (USER_DATA, Cow::Owned(self.user_data().into_bytes())),
        ];
        if let Some(network) = self.network_config() {
            entries.push((NETWORK_CONFIG, Cow::Owned(network.into_bytes())));
        }
        entries.extend(self.files.iter().map(|f| (f.name.as_str(), Cow::Borrowed(f.contents.as_slice()))));

        let content: u64 = entries.iter().map(|(_, bytes)| (bytes.len() as u64).next_multiple_of(CLUSTER_ROUND)).sum();
        let size = (content + HEADROOM_BYTES).next_multiple_of(MIB).max(MIN_IMAGE_BYTES);
        let size = usize::try_from(size).expect("a seed image fits in memory");
        let fat = |action: String| move |source| SeedError::Fat { action, source };

        let mut disk = Cursor::new(vec![0u8; size]);
        let mut label = [b' '; 11];
        label[..VOLUME_LABEL.len()].copy_from_slice(VOLUME_LABEL.as_bytes());
        fatfs::format_volume(&mut disk, FormatVolumeOptions::new().volume_label(label))
            .map_err(fat("format the volume".into()))?;
        disk.set_position(0);
        let options = FsOptions::new().time_provider(&FatEpoch);
        let fs = FileSystem::new(&mut disk, options).map_err(fat("open the volume".into()))?;
        for (name, bytes) in &entries {
            let mut file = fs.root_dir().create_file(name).map_err(fat(format!("create {name}")))?;
            file.write_all(bytes).map_err(fat(format!("write {name}")))?;
            file.flush().map_err(fat(format!("flush {name}")))?;
        }
        fs.unmount().map_err(fat("unmount the volume".into()))?;
        Ok(disk.into_inner())
    }
}

/// Gives every file the FAT epoch as its times. fatfs without `chrono` gives the raw date 0,
/// whose month 0 is invalid.
#[derive(Debug)]
struct FatEpoch;

impl TimeProvider for FatEpoch {
    fn get_current_date(&self) -> Date {
        Date { year: 1980, month: 1, day: 1 }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime { date: self.get_current_date(), time: Time { hour: 0, min: 0, sec: 0, millis: 0 } }
    }
}

/// One RFC 1123 label: 1 to 63 of `a-z 0-9 -`, not starting or ending with `-`.
fn validate_hostname(hostname: &str) -> Result<(), SeedError> {
    let ok = (1..=63).contains(&hostname.len())
        && hostname.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !hostname.starts_with('-')
        && !hostname.ends_with('-');
    if ok { Ok(()) } else { Err(SeedError::InvalidHostname { hostname: hostname.to_owned() }) }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::process::Command;

    use super::*;

    fn seed() -> Seed {
        Seed {
            instance_id: "i-0123".into(),
            hostname: "box-1".into(),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA test@host".into()],
            bootcmd: vec!["mkdir -p /run/nestbox".into(), "echo 'a \"quoted\" line'".into()],
            mounts: vec![
                Mount { device: "/dev/vdc".into(), path: "/data".into(), readonly: false },
                Mount { device: "/dev/vdd".into(), path: "/ro".into(), readonly: true },
            ],
            files: vec![SeedFile { name: "nestbox-agent".into(), contents: vec![0x7f, b'E', b'L', b'F', 0, 1] }],
            network: NetworkConfig::Dhcp,
        }
    }

    /// Every file at the root of `image` by name, and its volume label.
    fn read_image(image: &[u8]) -> (Vec<(String, Vec<u8>)>, String) {
        let fs = FileSystem::new(Cursor::new(image.to_vec()), FsOptions::new()).unwrap();
        let mut files = Vec::new();
        for entry in fs.root_dir().iter() {
            let entry = entry.unwrap();
            assert_eq!(entry.modified().date, Date { year: 1980, month: 1, day: 1 });
            let mut bytes = Vec::new();
            entry.to_file().read_to_end(&mut bytes).unwrap();
            files.push((entry.file_name(), bytes));
        }
        (files, fs.volume_label())
    }

    #[test]
    fn test_meta_data_is_json_with_id_and_hostname() {
        let meta: Value = serde_json::from_str(&seed().meta_data()).unwrap();
        assert_eq!(meta, json!({ "instance-id": "i-0123", "local-hostname": "box-1" }));
    }

    #[test]
    fn test_user_data_is_cloud_config_header_then_json() {
        let user_data = seed().user_data();
        let body = user_data.strip_prefix("#cloud-config\n").expect("the cloud-config header");
        let config: Value = serde_json::from_str(body).unwrap();
        assert_eq!(config["hostname"], "box-1");
        assert_eq!(config["disable_root"], false);
        assert_eq!(config["ssh_authorized_keys"], json!(["ssh-ed25519 AAAA test@host"]));
        assert_eq!(config["bootcmd"], json!(["mkdir -p /run/nestbox", "echo 'a \"quoted\" line'"]));
        assert_eq!(
            config["mounts"],
            json!([
                ["/dev/vdc", "/data", "auto", "defaults,nofail"],
                ["/dev/vdd", "/ro", "auto", "defaults,nofail,ro"]
            ])
        );

        let bare = Seed { ssh_authorized_keys: vec![], bootcmd: vec![], mounts: vec![], ..seed() };
        let config: Value = serde_json::from_str(bare.user_data().strip_prefix(CLOUD_CONFIG_HEADER).unwrap()).unwrap();
        assert_eq!(config, json!({ "hostname": "box-1", "disable_root": false }));
    }

    #[test]
    fn test_network_config_dhcp_matches_every_ethernet_and_none_has_no_file() {
        let net: Value = serde_json::from_str(&seed().network_config().unwrap()).unwrap();
        assert_eq!(net["version"], 2);
        assert_eq!(net["ethernets"]["all-ethernet"], json!({ "match": { "name": "e*" }, "dhcp4": true }));
        assert_eq!(Seed { network: NetworkConfig::None, ..seed() }.network_config(), None);
    }

    #[test]
    fn test_bad_hostnames_are_refused_naming_the_value() {
        for bad in ["", "-a", "a-", "Box", "a.b", "a_b", &"a".repeat(64)] {
            let err = Seed { hostname: bad.into(), ..seed() }.validate().unwrap_err();
            assert!(matches!(&err, SeedError::InvalidHostname { hostname } if hostname == bad), "{bad:?}: {err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        for good in ["a", "0", "a-b-9", &"a".repeat(63)] {
            Seed { hostname: good.into(), ..seed() }.validate().unwrap();
        }
    }

    #[test]
    fn test_bad_file_names_are_refused_naming_the_value() {
        let long = "a".repeat(256);
        for bad in ["", ".", "..", "a/b", "a b", "é", long.as_str(), "user-data", "Meta-Data", "NETWORK-CONFIG"] {
            let mut s = seed();
            s.files.push(SeedFile { name: bad.into(), contents: vec![] });
            let err = s.write(Path::new("/nonexistent/seed.img")).unwrap_err();
            assert!(matches!(&err, SeedError::InvalidFileName { name, .. } if name == bad), "{bad:?}: {err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        let mut s = seed();
        s.files.push(SeedFile { name: "NESTBOX-AGENT".into(), contents: vec![] });
        assert!(matches!(s.validate(), Err(SeedError::InvalidFileName { name, .. }) if name == "NESTBOX-AGENT"));
        s.files[1].name = "a.b_c+d-e.tar.gz".into();
        s.validate().unwrap();
    }

    #[test]
    fn test_write_gives_a_cidata_volume_with_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        let mut s = seed();
        // About the size of the agent: the image grows past the 2 MiB floor (and FAT12).
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        s.files.push(SeedFile { name: "big.bin".into(), contents: big.clone() });
        s.write(&path).unwrap();

        let image = std::fs::read(&path).unwrap();
        assert_eq!(image.len() as u64 % MIB, 0);
        assert!(image.len() as u64 >= 4 * MIB, "{}", image.len());
        let (files, label) = read_image(&image);
        assert_eq!(label, "CIDATA");
        let expected = vec![
            (META_DATA.to_string(), s.meta_data().into_bytes()),
            (USER_DATA.to_string(), s.user_data().into_bytes()),
            (NETWORK_CONFIG.to_string(), s.network_config().unwrap().into_bytes()),
            ("nestbox-agent".to_string(), s.files[0].contents.clone()),
            ("big.bin".to_string(), big),
        ];
        assert_eq!(files, expected);
        // Nothing but the seed is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        check_with_host_tools(&path);
    }

    #[test]
    fn test_rewrite_replaces_the_seed_wholly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        let mut first = seed();
        first.files.push(SeedFile { name: "old.bin".into(), contents: vec![1; 5 * MIB as usize] });
        first.write(&path).unwrap();

        let second = Seed { instance_id: "i-4567".into(), network: NetworkConfig::None, ..seed() };
        second.write(&path).unwrap();
        let image = std::fs::read(&path).unwrap();
        assert_eq!(image.len() as u64, MIN_IMAGE_BYTES, "the image shrank to fit");
        let (files, label) = read_image(&image);
        assert_eq!(label, "CIDATA");
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [META_DATA, USER_DATA, "nestbox-agent"]);
        assert_eq!(files[0].1, second.meta_data().into_bytes());
        check_with_host_tools(&path);
    }

    /// blkid and fsck.fat, when the host has them, see a clean vfat volume labelled CIDATA.
    fn check_with_host_tools(path: &Path) {
        let run = |program: &str, args: &[&str]| match Command::new(program).args(args).arg(path).output() {
            Ok(out) => Some(out),
            Err(e) => {
                eprintln!("note: {program} not run ({e}); host check skipped");
                None
            }
        };
        let blkid = |tag| run("blkid", &["-p", "-o", "value", "-s", tag]);
        if let (Some(label), Some(kind)) = (blkid("LABEL"), blkid("TYPE")) {
            assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "CIDATA", "{label:?}");
            assert_eq!(String::from_utf8_lossy(&kind.stdout).trim(), "vfat", "{kind:?}");
        }
        if let Some(out) = run("fsck.fat", &["-n"]) {
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
