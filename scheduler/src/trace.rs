//! The openb trace (Alibaba cluster-trace-gpu-v2023): node and task CSV files.
//!
//! Only the columns the simulation uses are read, by header name, so the five-column
//! `multigpu*` files and the full files load alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::cluster::{DeviceSpec, FULL_DEVICE_MILLI, NodeSpec};
use crate::frag::ClassKey;
use crate::model::{ModelError, ModelSet, ModelTable};
use crate::request::{ClassId, Request};

/// Errors raised while reading a trace file.
#[derive(Debug, Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: missing column `{column}` in the header")]
    MissingColumn { path: PathBuf, column: &'static str },
    #[error("{path}:{line}: column `{column}` has `{value}`, expected a non-negative integer")]
    BadNumber {
        path: PathBuf,
        line: usize,
        column: &'static str,
        value: String,
    },
    #[error("{path}:{line}: {num_gpu} devices of {gpu_milli} milli each is not a valid task")]
    BadTask {
        path: PathBuf,
        line: usize,
        num_gpu: u32,
        gpu_milli: u32,
    },
    #[error("{path}: {source}")]
    Model { path: PathBuf, source: ModelError },
    #[error("{path}: no data rows")]
    Empty { path: PathBuf },
}

/// One task of a trace, as a request plus the class key FGD's workload groups it by.
#[derive(Debug, Clone)]
pub struct TraceTask {
    pub request: Request,
    pub key: ClassKey,
}

/// A cluster and a task list read from openb files.
#[derive(Debug, Clone)]
pub struct Trace {
    pub models: ModelTable,
    pub nodes: Vec<NodeSpec>,
    pub tasks: Vec<TraceTask>,
}

impl Trace {
    /// Reads a node list and a task list. Task classes get ids in order of first
    /// appearance, so per-class score caches work across the run.
    pub fn load(nodes_csv: &Path, tasks_csv: &Path) -> Result<Self, TraceError> {
        let mut models = ModelTable::default();
        let nodes = read_nodes(nodes_csv, &mut models)?;
        let tasks = read_tasks(tasks_csv, &mut models)?;
        Ok(Trace {
            models,
            nodes,
            tasks,
        })
    }
}

struct Table {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<(usize, Vec<String>)>,
}

impl Table {
    fn read(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let header = lines
            .next()
            .map(|(_, h)| h.split(',').map(|c| c.trim().to_owned()).collect())
            .unwrap_or_default();
        let rows: Vec<(usize, Vec<String>)> = lines
            .map(|(i, l)| (i + 1, l.split(',').map(|c| c.trim().to_owned()).collect()))
            .collect();
        if rows.is_empty() {
            return Err(TraceError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(Table {
            path: path.to_owned(),
            header,
            rows,
        })
    }

    fn column(&self, name: &'static str) -> Result<usize, TraceError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or(TraceError::MissingColumn {
                path: self.path.clone(),
                column: name,
            })
    }

    fn number(
        &self,
        line: usize,
        row: &[String],
        col: usize,
        name: &'static str,
    ) -> Result<u64, TraceError> {
        let value = row.get(col).map_or("", String::as_str);
        value.parse().map_err(|_| TraceError::BadNumber {
            path: self.path.clone(),
            line,
            column: name,
            value: value.to_owned(),
        })
    }
}

/// Reads an openb node list (`sn,cpu_milli,memory_mib,gpu,model`).
pub fn read_nodes(path: &Path, models: &mut ModelTable) -> Result<Vec<NodeSpec>, TraceError> {
    let table = Table::read(path)?;
    let (name, cpu, mem, gpu, model) = (
        table.column("sn")?,
        table.column("cpu_milli")?,
        table.column("memory_mib")?,
        table.column("gpu")?,
        table.column("model")?,
    );
    let mut nodes = Vec::with_capacity(table.rows.len());
    for (line, row) in &table.rows {
        let gpus = table.number(*line, row, gpu, "gpu")?;
        let model_name = row.get(model).map_or("", String::as_str);
        let model_id = if gpus == 0 || model_name.is_empty() {
            None
        } else {
            Some(
                models
                    .intern(model_name)
                    .map_err(|source| TraceError::Model {
                        path: path.to_owned(),
                        source,
                    })?,
            )
        };
        let node_name = row.get(name).cloned().unwrap_or_default();
        let devices = (0..gpus)
            .map(|g| DeviceSpec {
                uuid: format!("{node_name}-gpu{g}"),
                memory_mib: 0,
                numa: None,
                link_group: None,
            })
            .collect();
        nodes.push(NodeSpec {
            cpu_milli: table.number(*line, row, cpu, "cpu_milli")?,
            memory_mib: table.number(*line, row, mem, "memory_mib")?,
            model: model_id,
            devices,
            name: node_name,
        });
    }
    Ok(nodes)
}

/// Reads an openb task list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,…]`).
pub fn read_tasks(path: &Path, models: &mut ModelTable) -> Result<Vec<TraceTask>, TraceError> {
    let table = Table::read(path)?;
    let (cpu, mem, num, milli) = (
        table.column("cpu_milli")?,
        table.column("memory_mib")?,
        table.column("num_gpu")?,
        table.column("gpu_milli")?,
    );
    let spec = table.column("gpu_spec").ok();
    let mut classes: HashMap<ClassKey, ClassId> = HashMap::new();
    let mut tasks = Vec::with_capacity(table.rows.len());
    for (line, row) in &table.rows {
        let cpu_milli = table.number(*line, row, cpu, "cpu_milli")?;
        let memory_mib = table.number(*line, row, mem, "memory_mib")?;
        let num_gpu = u32::try_from(table.number(*line, row, num, "num_gpu")?).unwrap_or(u32::MAX);
        let gpu_milli =
            u32::try_from(table.number(*line, row, milli, "gpu_milli")?).unwrap_or(u32::MAX);
        let spec_text = spec.and_then(|c| row.get(c)).cloned().unwrap_or_default();
        let mut request = match (num_gpu, gpu_milli) {
            (0, _) => Request::cpu_only(cpu_milli, memory_mib),
            (n, m) if m >= FULL_DEVICE_MILLI => Request::whole(cpu_milli, memory_mib, n),
            (1, m) if m > 0 => Request::share(cpu_milli, memory_mib, m, 0),
            (n, m) => {
                return Err(TraceError::BadTask {
                    path: path.to_owned(),
                    line: *line,
                    num_gpu: n,
                    gpu_milli: m,
                });
            }
        };
        request.models = model_set(&spec_text, models).map_err(|source| TraceError::Model {
            path: path.to_owned(),
            source,
        })?;
        let key = ClassKey {
            cpu_milli,
            milli: if num_gpu == 0 { 0 } else { gpu_milli },
            device_count: num_gpu,
            spec: spec_text,
        };
        let next = ClassId::try_from(classes.len()).unwrap_or(ClassId::MAX);
        request.class = Some(*classes.entry(key.clone()).or_insert(next));
        tasks.push(TraceTask { request, key });
    }
    Ok(tasks)
}

/// The models a `gpu_spec` accepts: `A|B|B` → {A, B}; empty → any.
fn model_set(spec: &str, models: &mut ModelTable) -> Result<ModelSet, ModelError> {
    let mut set = ModelSet::NONE;
    let mut any = true;
    for name in spec.split('|').map(str::trim).filter(|s| !s.is_empty()) {
        any = false;
        set = set.with(models.intern(name)?);
    }
    Ok(if any { ModelSet::ANY } else { set })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_nodes_and_tasks_with_specs_and_classes() {
        let nodes =
            file("sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\nn1,32000,1000,0,\n");
        let tasks = file(
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n\
             p0,1000,10,1,460,\np1,2000,20,2,1000,V100M16|V100M32|V100M32\np2,500,5,0,0,\np3,1000,10,1,460,\n",
        );
        let trace = Trace::load(nodes.path(), tasks.path()).unwrap();
        assert_eq!(trace.nodes.len(), 2);
        assert_eq!(trace.nodes[0].devices.len(), 2);
        assert_eq!(trace.nodes[1].model, None);
        let t = &trace.tasks;
        assert_eq!(t[0].request, {
            let mut r = Request::share(1000, 10, 460, 0);
            r.class = Some(0);
            r
        });
        assert!(t[1].request.is_whole_device());
        let v16 = trace.models.lookup("V100M16").unwrap();
        let p100 = trace.models.lookup("P100").unwrap();
        assert!(t[1].request.models.contains(v16) && !t[1].request.models.contains(p100));
        assert!(t[2].request.is_cpu_only());
        assert_eq!(t[3].request.class, t[0].request.class);
        assert_ne!(t[1].request.class, t[0].request.class);
    }

    #[test]
    fn bad_input_names_the_file_line_and_column() {
        let nodes = file("sn,cpu_milli,memory_mib,gpu,model\nn0,lots,1,1,T4\n");
        let err = read_nodes(nodes.path(), &mut ModelTable::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2: column `cpu_milli` has `lots`"), "{err}");
        let tasks = file("name,cpu_milli,memory_mib,num_gpu\np,1,1,1\n");
        let err = read_tasks(tasks.path(), &mut ModelTable::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing column `gpu_milli`"), "{err}");
        let missing = read_tasks(Path::new("/nonexistent/x.csv"), &mut ModelTable::default());
        assert!(matches!(missing, Err(TraceError::Io { .. })));
    }
}
