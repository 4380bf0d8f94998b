//! Templates of the image repository: reading an image's format and size,
//! and registering an image (an uploaded one, or a VM's exported disk) as a
//! template.

use neptune_types::TemplateId;
use neptune_types::UserId;
use std::path::Path;

use neptune_store::{Store, StoreError, TemplateRecord};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What `qemu-img info` says of an image.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// The file a qcow2 image reads what it lacks from.
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    /// Format details: a qcow2 image may keep its data in another file.
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<serde_json::Value>,
}

impl ImageInfo {
    /// The external data file of a qcow2 image, if it names one.
    pub fn data_file(&self) -> Option<&str> {
        self.format_specific.as_ref()?["data"]["data-file"].as_str()
    }

    /// The virtual size in MiB, rounded up.
    pub fn size_mib(&self) -> i64 {
        i64::try_from(self.virtual_size.div_ceil(1 << 20)).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("cannot run qemu-img")]
    Run(#[source] std::io::Error),
    #[error("qemu-img cannot read the image: {0}")]
    Unreadable(String),
    #[error("unexpected qemu-img output")]
    Output(#[source] serde_json::Error),
}

/// Reads an image's format and virtual size with `qemu-img`, which opens
/// the image alone (not what it names), in at most 1 GiB of memory and 30 s
/// of CPU: an uploaded image is untrusted input, and a crafted one could
/// make it take either without bound.
pub async fn inspect(path: &Path) -> Result<ImageInfo, ImageError> {
    let out = tokio::process::Command::new("prlimit")
        .args(["--as=1073741824", "--cpu=30", "--"])
        .args(["qemu-img", "info", "--output=json", "--force-share"])
        .arg(path)
        .output()
        .await
        .map_err(ImageError::Run)?;
    if !out.status.success() {
        return Err(ImageError::Unreadable(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(ImageError::Output)
}

/// Checks a qcow2 image's metadata with `qemu-img check` (bounded as
/// [`inspect`] is). Leaked clusters (exit status 3) waste room and harm
/// nothing; corruption (2) or an unreadable image (1) is refused.
pub async fn check(path: &Path) -> Result<(), ImageError> {
    let out = tokio::process::Command::new("prlimit")
        .args(["--as=1073741824", "--cpu=60", "--"])
        .args(["qemu-img", "check", "-q", "-f", "qcow2", "--force-share"])
        .arg(path)
        .output()
        .await
        .map_err(ImageError::Run)?;
    match out.status.code() {
        Some(0 | 3) => Ok(()),
        _ => Err(ImageError::Unreadable(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
    }
}

/// A template to register once its image exists (the last step of saving a
/// VM as a template). Its id is chosen up front, so registering again after
/// a crash recognises the template it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTemplate {
    pub id: TemplateId,
    pub name: String,
    pub owner_id: UserId,
    pub image_path: String,
    pub os_name: String,
    pub vcpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    /// JSON, as stored.
    pub software: String,
}

#[derive(Debug, Error)]
pub enum RegisterError {
    #[error("the image of template {name:?}")]
    Image {
        name: String,
        #[source]
        source: ImageError,
    },
    #[error("template {0:?} already exists")]
    Taken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Registers `t` (idempotent: the same template registered before is fine;
/// another one of the same name is not). The image's virtual size raises
/// the disk size when it is larger.
pub async fn register(store: &dyn Store, t: &NewTemplate) -> Result<TemplateRecord, RegisterError> {
    match store.template_for(t.owner_id, &t.name).await {
        Ok(existing) if existing.id == t.id => return Ok(existing),
        Ok(existing) if existing.owner_id == Some(t.owner_id) => {
            return Err(RegisterError::Taken(t.name.clone()))
        }
        // Not found, or a public template the owner's private one shadows.
        Ok(_) | Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let info = inspect(Path::new(&t.image_path))
        .await
        .map_err(|source| RegisterError::Image {
            name: t.name.clone(),
            source,
        })?;
    let size_mib = info.size_mib();
    let record = TemplateRecord {
        id: t.id,
        name: t.name.clone(),
        owner_id: Some(t.owner_id),
        // A saved VM is its owner's until an administrator publishes it.
        visibility: neptune_store::Visibility::Private,
        image_path: t.image_path.clone(),
        format: info.format,
        size_mib,
        os_name: t.os_name.clone(),
        vcpus: t.vcpus,
        ram_mib: t.ram_mib,
        disk_mib: t.disk_mib.max(size_mib),
        software: t.software.clone(),
        created_at: crate::now_ms(),
    };
    match store.create_template(&record).await {
        Ok(()) => Ok(record),
        // Registered meanwhile (by this job, elsewhere, before a crash).
        Err(StoreError::Duplicate { .. }) => match store.template_for(t.owner_id, &t.name).await {
            Ok(existing) if existing.id == t.id => Ok(existing),
            _ => Err(RegisterError::Taken(t.name.clone())),
        },
        Err(e) => Err(e.into()),
    }
}
