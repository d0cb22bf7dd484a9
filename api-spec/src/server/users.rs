//! Users: `/api/v1/users`.

use super::common::{self, Accepted, Done, Tagged, invalid};
use super::contract::documents::UserPage;
use super::contract::text::Text;
use super::problem::ApiResult;
use super::queries as q;
use super::security::Caller;
use chrono::{DateTime, Utc};
use edict_application::users::NewUser;
use edict_domain::UserId;
use edict_domain::user::{Email, GlobalRole, PersonName, User};
use poem_openapi::param::Header;
use poem_openapi::param::Path;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};

#[derive(Tags)]
enum UserTags {
    /// People who use Edict, and their global roles.
    Users,
}

/// A global role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum GlobalRoleDto {
    /// Administers everything.
    OrgAdmin,
    /// Reads everything, changes nothing.
    Auditor,
    /// A developer.
    Member,
}

impl From<GlobalRoleDto> for GlobalRole {
    fn from(role: GlobalRoleDto) -> Self {
        match role {
            GlobalRoleDto::OrgAdmin => GlobalRole::OrgAdmin,
            GlobalRoleDto::Auditor => GlobalRole::Auditor,
            GlobalRoleDto::Member => GlobalRole::Member,
        }
    }
}

impl From<GlobalRole> for GlobalRoleDto {
    fn from(role: GlobalRole) -> Self {
        match role {
            GlobalRole::OrgAdmin => GlobalRoleDto::OrgAdmin,
            GlobalRole::Auditor => GlobalRoleDto::Auditor,
            GlobalRole::Member => GlobalRoleDto::Member,
        }
    }
}

/// A user to create.
#[derive(Debug, Clone, Object)]
pub struct NewUserDto {
    /// Unique email; it is their sign-in name.
    pub email: Text,
    /// Their name.
    pub name: Text,
    /// Their first password: 12 to 1024 characters.
    #[oai(write_only)]
    pub password: Text,
    /// Their global roles.
    #[oai(default)]
    #[oai(nullable)]
    pub roles: Vec<GlobalRoleDto>,
}

/// A role to grant.
#[derive(Debug, Clone, Object)]
pub struct RoleDto {
    /// The role.
    pub role: GlobalRoleDto,
}

/// A password change.
#[derive(Debug, Clone, Object)]
pub struct PasswordDto {
    /// The current password (required to change your own).
    #[oai(write_only)]
    #[oai(nullable)]
    pub current_password: Option<Text>,
    /// The new password: 12 to 1024 characters.
    #[oai(write_only)]
    pub new_password: Text,
}

/// A user.
#[derive(Debug, Clone, Object)]
pub struct UserDto {
    /// Their id.
    pub id: String,
    /// The number of events so far; send as `If-Match`.
    pub version: u64,
    /// Their email.
    pub email: String,
    /// Their name.
    pub name: String,
    /// Their global roles.
    pub roles: Vec<GlobalRoleDto>,
    /// Whether they may sign in.
    pub active: bool,
    /// When they were created.
    pub created_at: DateTime<Utc>,
}

impl UserDto {
    fn from_user(user: &User) -> Option<Self> {
        use edict_domain::Versioned;
        Some(UserDto {
            id: user.id()?.to_string(),
            version: user.version(),
            email: user.email()?.as_str().to_owned(),
            name: user.name()?.as_str().to_owned(),
            roles: user.roles().iter().map(|r| (*r).into()).collect(),
            active: user.active(),
            created_at: user.created_at()?,
        })
    }
}

fn user_id(raw: &str) -> Result<UserId, super::problem::ErrorResponse> {
    common::id::<UserId>(raw, "user")
}

fn found(user: &User, if_none_match: Option<&str>) -> ApiResult<Tagged<UserDto>> {
    common::found(
        UserDto::from_user(user),
        "user",
        |u| u.version,
        if_none_match,
    )
}

/// Users.
pub struct UsersApi;

#[OpenApi(tag = "UserTags::Users")]
impl UsersApi {
    /// Creates a user with a password. org_admin.
    #[oai(path = "/api/v1/users", method = "post")]
    async fn create(&self, caller: Caller<'_>, body: Json<NewUserDto>) -> Accepted {
        let new = NewUser {
            email: Email::parse(&body.email).map_err(invalid)?,
            name: PersonName::parse(&body.name).map_err(invalid)?,
            password: body.password.to_string(),
            roles: body.roles.iter().map(|r| (*r).into()).collect(),
        };
        caller
            .run(async |e, p, ctx| e.create_user(p, new, ctx).await)
            .await
    }

    /// The signed-in user.
    #[oai(path = "/api/v1/users/me", method = "get")]
    async fn me(
        &self,
        caller: Caller<'_>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<UserDto>> {
        let user = caller
            .edict
            .user(&caller.principal, caller.principal.user());
        found(&user.await?, if_none_match.as_deref())
    }

    /// A user. org_admin, auditor, or the user themself.
    #[oai(path = "/api/v1/users/:id", method = "get")]
    async fn get(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        /// A version from an earlier answer's `ETag`: 304 without a body while it is still current.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> ApiResult<Tagged<UserDto>> {
        let user = caller.edict.user(&caller.principal, user_id(&id)?).await?;
        found(&user, if_none_match.as_deref())
    }

    /// Grants a global role. org_admin.
    #[oai(path = "/api/v1/users/:id/roles", method = "post")]
    async fn grant_role(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<RoleDto>,
    ) -> Accepted {
        let (id, role) = (user_id(&id)?, body.role.into());
        caller
            .run(async |e, p, ctx| e.grant_role(p, id, role, ctx).await)
            .await
    }

    /// Revokes a global role. org_admin (not their own org_admin role).
    #[oai(path = "/api/v1/users/:id/roles/:role", method = "delete")]
    async fn revoke_role(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        role: Path<GlobalRoleDto>,
    ) -> Accepted {
        let (id, role) = (user_id(&id)?, role.0.into());
        caller
            .run(async |e, p, ctx| e.revoke_role(p, id, role, ctx).await)
            .await
    }

    /// Deactivates a user: their sessions close at once. org_admin.
    #[oai(path = "/api/v1/users/:id/deactivate", method = "post")]
    async fn deactivate(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = user_id(&id)?;
        caller
            .run(async |e, p, ctx| e.deactivate_user(p, id, ctx).await)
            .await
    }

    /// Reactivates a user. org_admin.
    #[oai(path = "/api/v1/users/:id/reactivate", method = "post")]
    async fn reactivate(&self, caller: Caller<'_>, id: Path<String>) -> Accepted {
        let id = user_id(&id)?;
        caller
            .run(async |e, p, ctx| e.reactivate_user(p, id, ctx).await)
            .await
    }

    /// Changes a password: your own with the current one, or anyone's as org_admin.
    #[oai(path = "/api/v1/users/:id/password", method = "put")]
    async fn password(
        &self,
        caller: Caller<'_>,
        id: Path<String>,
        body: Json<PasswordDto>,
    ) -> ApiResult<Json<Done>> {
        let id = user_id(&id)?;
        let current = body.current_password.as_deref();
        let new = &body.new_password;
        caller
            .run(async |e, p, ctx| e.change_password(p, id, current, new, ctx).await)
            .await?;
        Ok(Json(Done { done: true }))
    }

    /// Users with their roles and teams; filter `status` (`active`, `deactivated`). org_admin or auditor.
    #[oai(path = "/api/v1/users", method = "get")]
    async fn list(
        &self,
        caller: Caller<'_>,
        status: Query<Option<String>>,
        after: Query<Option<String>>,
        limit: Query<Option<u32>>,
        min_position: Query<Option<i64>>,
    ) -> ApiResult<Json<UserPage>> {
        let page = q::page(after.0, limit.0, min_position.0);
        let users = caller.edict.list_users(&caller.principal, status.0, &page);
        Ok(Json(UserPage::of(users.await?)?))
    }
}
