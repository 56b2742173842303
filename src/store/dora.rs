//! Writing the inputs of DORA: pushes with their commits, and incidents (schema.sql: pushes,
//! push_commits, incidents). Upserts: a redelivery replaces what it names, never duplicates.

use rusqlite::{named_params, params, Connection, OptionalExtension};

use super::{project_id, Counts, Ids};
use crate::error::Result;
use crate::model::{Incident, Push};

const SELECT_PUSH: &str =
    "SELECT id FROM pushes WHERE project_id = ?1 AND branch = ?2 AND head_sha = ?3";
const INSERT_PUSH: &str = "INSERT INTO pushes (project_id, branch, head_sha, pushed_at)
    VALUES (?1, ?2, ?3, ?4) RETURNING id";
const UPDATE_PUSH: &str = "UPDATE pushes SET pushed_at = ?2 WHERE id = ?1";
const DELETE_PUSH_COMMITS: &str = "DELETE FROM push_commits WHERE push_id = ?1";
const INSERT_PUSH_COMMIT: &str =
    "INSERT INTO push_commits (push_id, position, sha, committed_at) VALUES (?1, ?2, ?3, ?4)";

/// Stores pushes by (project, branch, last commit's sha); a known one is replaced with its
/// commits.
pub fn write_pushes(conn: &Connection, ids: &mut Ids, pushes: &[Push]) -> Result<Counts> {
    let mut counts = Counts::default();
    for push in pushes {
        let project = project_id(conn, ids, &push.project, None, None)?;
        let head = &push.commits.last().expect("a push has commits").sha;
        let found: Option<i64> = conn
            .prepare_cached(SELECT_PUSH)?
            .query_row(params![project, push.branch, head], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => {
                conn.prepare_cached(UPDATE_PUSH)?
                    .execute(params![id, push.pushed_at])?;
                conn.prepare_cached(DELETE_PUSH_COMMITS)?.execute([id])?;
                counts.updated += 1;
                id
            }
            None => {
                counts.created += 1;
                conn.prepare_cached(INSERT_PUSH)?
                    .query_row(params![project, push.branch, head, push.pushed_at], |r| {
                        r.get(0)
                    })?
            }
        };
        let mut insert = conn.prepare_cached(INSERT_PUSH_COMMIT)?;
        for (position, c) in push.commits.iter().enumerate() {
            insert.execute(params![id, position as i64, c.sha, c.committed_at])?;
        }
    }
    Ok(counts)
}

const UPSERT_INCIDENT: &str = "INSERT INTO incidents (project_id, ext_id, title, service, env,
    started_at, resolved_at, severity, url, deployment, commit_sha)
    VALUES (:project_id, :ext_id, :title, :service, :env, :started_at, :resolved_at, :severity,
        :url, :deployment, :commit_sha)
    ON CONFLICT (project_id, ext_id) DO UPDATE SET title = excluded.title,
        service = excluded.service, env = excluded.env, started_at = excluded.started_at,
        resolved_at = excluded.resolved_at, severity = excluded.severity, url = excluded.url,
        deployment = excluded.deployment, commit_sha = excluded.commit_sha";
const INCIDENT_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM incidents WHERE project_id = ?1 AND ext_id = ?2)";

/// Stores incidents by (project, id); a later delivery replaces the earlier one.
pub fn write_incidents(conn: &Connection, ids: &mut Ids, incidents: &[Incident]) -> Result<Counts> {
    let mut counts = Counts::default();
    for i in incidents {
        let project = project_id(conn, ids, &i.project, None, None)?;
        let existed: bool = conn
            .prepare_cached(INCIDENT_EXISTS)?
            .query_row(params![project, i.id], |r| r.get(0))?;
        conn.prepare_cached(UPSERT_INCIDENT)?
            .execute(named_params! {
                ":project_id": project,
                ":ext_id": i.id,
                ":title": i.title,
                ":service": i.service,
                ":env": i.env,
                ":started_at": i.started_at,
                ":resolved_at": i.resolved_at,
                ":severity": i.severity,
                ":url": i.url,
                ":deployment": i.deployment,
                ":commit_sha": i.commit,
            })?;
        if existed {
            counts.updated += 1;
        } else {
            counts.created += 1;
        }
    }
    Ok(counts)
}

const DELETE_INCIDENT: &str = "DELETE FROM incidents
    WHERE project_id = (SELECT id FROM projects WHERE slug = ?1) AND ext_id = ?2";

/// Removes the incident (project, id); whether there was one.
pub fn remove_incident(conn: &Connection, project: &str, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(DELETE_INCIDENT)?
        .execute(params![project, id])?
        > 0)
}
