//! Operator commands to running sources (`source_command` rows): a mutation writes the
//! intent; the supervisor running the source claims it, stops the task, applies it, and
//! starts the task again from the stored state.

use chrono::Utc;
use orrery_entity::{source, source_command};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use serde_json::Value;

use super::SyncContext;

/// Command names.
pub const REWIND: &str = "rewind";
/// Restart the task (reloads state from the database).
pub const RESTART: &str = "restart";

/// Queues a command for `source_id`.
pub async fn enqueue<C: ConnectionTrait>(
    db: &C,
    source_id: &str,
    command: &str,
    arguments: Value,
    requested_by: &str,
) -> Result<source_command::Model, DbErr> {
    source_command::ActiveModel {
        source_id: Set(source_id.to_string()),
        command: Set(command.to_string()),
        arguments: Set(arguments),
        requested_by: Set(requested_by.to_string()),
        created_at: Set(Utc::now()),
        applied_at: Set(None),
        result: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
}

/// Claims the oldest pending command of this source (a conditional update, so one claimer
/// wins when several replicas poll).
pub async fn claim_next(ctx: &SyncContext) -> Result<Option<source_command::Model>, DbErr> {
    let Some(cmd) = source_command::Entity::find()
        .filter(source_command::Column::SourceId.eq(ctx.source.id.clone()))
        .filter(source_command::Column::AppliedAt.is_null())
        .order_by_asc(source_command::Column::Id)
        .one(&ctx.db)
        .await?
    else {
        return Ok(None);
    };
    let claimed = source_command::Entity::update_many()
        .col_expr(
            source_command::Column::AppliedAt,
            sea_orm::sea_query::Expr::value(Utc::now()),
        )
        .filter(source_command::Column::Id.eq(cmd.id))
        .filter(source_command::Column::AppliedAt.is_null())
        .exec(&ctx.db)
        .await?;
    Ok((claimed.rows_affected == 1).then_some(cmd))
}

/// Applies a claimed command while the source task is stopped; records the result.
pub async fn apply(ctx: &SyncContext, cmd: &source_command::Model) {
    let result = match cmd.command.as_str() {
        REWIND => rewind(ctx, &cmd.arguments).await,
        RESTART => Ok("restarted".to_string()),
        other => Ok(format!("unknown command {other:?} ignored")),
    };
    let text = match result {
        Ok(t) => t,
        Err(e) => format!("failed: {e}"),
    };
    tracing::info!(source = %ctx.source.id, command = %cmd.command, result = %text, "source command applied");
    let mut am: source_command::ActiveModel = cmd.clone().into();
    am.result = Set(Some(text));
    if let Err(e) = am.update(&ctx.db).await {
        tracing::warn!(error = %e, "cannot record source command result");
    }
}

async fn rewind(ctx: &SyncContext, args: &Value) -> Result<String, DbErr> {
    let row = source::Entity::find_by_id(ctx.source.id.clone())
        .one(&ctx.db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(ctx.source.id.clone()))?;
    let height = args.get("height").and_then(Value::as_i64);
    let cursor = args
        .get("cursor")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut am: source::ActiveModel = row.into();
    am.indexed_height = Set(height);
    am.cursor = Set(cursor.clone().or_else(|| height.map(|h| h.to_string())));
    am.status = Set("idle".to_string());
    am.updated_at = Set(Utc::now());
    let row = am.update(&ctx.db).await?;
    ctx.remember(&row);
    ctx.publish_source(&row).await;
    Ok(format!("rewound to height {height:?} cursor {cursor:?}"))
}
