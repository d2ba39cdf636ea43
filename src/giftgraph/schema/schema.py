"""Assembles Query, Mutation (and Subscription) into one Strawberry schema."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.extensions import DisableIntrospection
from strawberry.extensions.runner import SchemaExtensionsRunner

from giftgraph.accel.switch import FastPaths, install
from giftgraph.admission.checks import (
    PARSED,
    DocumentBounds,
    ParseWithTokenLimit,
    analysed,
    analysis_allowance,
    analysis_keys,
    caller_key,
    charge,
    preparse,
)
from giftgraph.admission.pace import Allowance
from giftgraph.config import Settings
from giftgraph.live.directive import UNWRAPPED, live_subscription_of, may_be_live
from giftgraph.observability import OperationLog
from giftgraph.persisted import REGISTERING, RegisterPersisted
from giftgraph.resolvers import comments as r_comments
from giftgraph.resolvers import gifts as r_gifts
from giftgraph.resolvers import lists as r_lists
from giftgraph.resolvers import live as r_live
from giftgraph.resolvers import persons as r_persons
from giftgraph.resolvers import queries as r_queries
from giftgraph.resolvers import users as r_users
from giftgraph.resolvers.subscriptions import SUBSCRIPTION_DESCRIPTION, Subscription
from giftgraph.schema import types
from giftgraph.schema.cache import ResultCache, ResultStore
from giftgraph.schema.connection import Connection
from giftgraph.schema.extensions import (
    ChooseOperation,
    FormatErrors,
    FreshValidationCache,
    RefuseNul,
    RequestScope,
    ValidationCache,
)
from giftgraph.schema.retry import install_retries
from giftgraph.schema.scalars import SCALAR_OVERRIDES


@strawberry.type(description="Reads. Every field needs an access token (else UNAUTHENTICATED) "
                              "and sees only the caller's family.")
class Query:
    node: types.Node | None = strawberry.field(
        resolver=r_queries.node,
        description="Any object of your family by its global ID; another family's, or an unknown "
                    "ID, is NOT_FOUND.")
    me: types.User = strawberry.field(
        resolver=r_users.me,
        description="The member calling (the access token's).")
    family: types.Family = strawberry.field(
        resolver=r_users.family,
        description="Your family.")
    users: Connection[types.User] = strawberry.field(
        resolver=r_users.users,
        description="The family's members, oldest account first.")
    persons: Connection[types.Person] = strawberry.field(
        resolver=r_persons.persons,
        description="The family's people, by name.")
    occasions: Connection[types.Occasion] = strawberry.field(
        resolver=r_persons.occasions,
        description="The family's occasions by date, earliest first (past ones too unless `from` "
                    "is given).")
    lists: Connection[types.GiftList] = strawberry.field(
        resolver=r_lists.lists,
        description="The family's gift lists, oldest first.")
    gifts: Connection[types.Gift] = strawberry.field(
        resolver=r_gifts.gifts,
        description="The family's gifts, oldest first.")
    comments: Connection[types.Comment] = strawberry.field(
        resolver=r_comments.comments,
        description="The comments on one object of the family, oldest first.")
    events: Connection[types.Event] = strawberry.field(
        resolver=r_queries.events,
        description="The activity log, newest first: by default each change once (topic family).")
    dashboard: r_queries.Dashboard = strawberry.field(
        resolver=r_queries.dashboard,
        description="The family at a glance: next occasions, items by status, people, recent "
                    "ideas and activity, budget vs spent.")


@strawberry.type(name="Subscription", description=SUBSCRIPTION_DESCRIPTION)
class LiveSubscription(Subscription):
    live = strawberry.subscription(resolver=r_live.live, graphql_type=Query,
                                   description=r_live.DESCRIPTION)


@strawberry.type(
    description="Changes. Each mutation field runs in its own transaction: it applies whole or "
                "not at all, and its events reach subscribers after it commits. Besides the "
                "codes each lists, any operation can fail as a whole with BAD_USER_INPUT (a "
                "document or variables that don't fit the schema), QUERY_TOO_COMPLEX (over a "
                "size limit) or INTERNAL_SERVER_ERROR (`retryable` when it may pass).")
class Mutation:
    sign_up: types.AuthPayload = strawberry.mutation(
        resolver=r_users.sign_up,
        description="Creates a family and its first member, an ADMIN, and logs them in. Errors: "
                    "BAD_USER_INPUT, CONFLICT (email taken), RATE_LIMITED (per IP, or too many "
                    "passwords being hashed).")
    login: types.AuthPayload = strawberry.mutation(
        resolver=r_users.login,
        description="Logs a member in. A wrong email or password and a deactivated member get "
                    "the same error. Errors: UNAUTHENTICATED, RATE_LIMITED (per IP and per "
                    "email, or too many passwords being hashed).")
    refresh_token: types.AuthPayload = strawberry.mutation(
        resolver=r_users.refresh_token,
        description="Exchanges a refresh token for a new AuthPayload; the token is rotated, so "
                    "use the new one next time. Presenting a used token again revokes the whole "
                    "session. Errors: UNAUTHENTICATED (invalid, expired, used or revoked token, "
                    "or a deactivated member), RATE_LIMITED.")
    logout: bool = strawberry.mutation(
        resolver=r_users.logout,
        description="Ends the session a refresh token belongs to: its tokens stop working and "
                    "its sockets close. True if a session was found, false for an unknown token. "
                    "Errors: RATE_LIMITED.")
    update_family: types.Family = strawberry.mutation(
        resolver=r_users.update_family,
        description="An ADMIN changes the family's name or currency; omitted fields stay as they "
                    "are. Errors: UNAUTHENTICATED, FORBIDDEN (a MEMBER), BAD_USER_INPUT, "
                    "RATE_LIMITED.")
    register_user: types.User = strawberry.mutation(
        resolver=r_users.register_user,
        description="An ADMIN adds a member to the family, who then logs in with this email and "
                    "password. Errors: UNAUTHENTICATED, FORBIDDEN (a MEMBER), BAD_USER_INPUT, "
                    "CONFLICT (email taken), RATE_LIMITED.")
    update_user: types.User = strawberry.mutation(
        resolver=r_users.update_user,
        description="Changes a member: yourself (email, displayName; password with "
                    "currentPassword), or as an ADMIN anyone, role and isActive too. A new "
                    "password or a deactivation ends the member's sessions. Errors: "
                    "UNAUTHENTICATED, FORBIDDEN (a MEMBER changing another member, a role or "
                    "isActive), NOT_FOUND, BAD_USER_INPUT (also currentPassword missing or "
                    "wrong), CONFLICT (email taken, or the last active ADMIN demoted or "
                    "deactivated), RATE_LIMITED.")
    delete_user: strawberry.ID = strawberry.mutation(
        resolver=r_users.delete_user,
        description="An ADMIN deletes a member: their lists pass to the deleting ADMIN (another "
                    "ADMIN when deleting yourself), their items are unassigned, their comments "
                    "lose their author, their sessions end. Returns the deleted ID. Errors: "
                    "UNAUTHENTICATED, FORBIDDEN (a MEMBER), NOT_FOUND, CONFLICT (the last active "
                    "ADMIN), RATE_LIMITED.")
    create_person: types.Person = strawberry.mutation(
        resolver=r_persons.create_person,
        description="Adds a person to give gifts to. Errors: UNAUTHENTICATED, BAD_USER_INPUT, "
                    "RATE_LIMITED.")
    update_person: types.Person = strawberry.mutation(
        resolver=r_persons.update_person,
        description="Changes a person. Errors: UNAUTHENTICATED, NOT_FOUND, BAD_USER_INPUT, "
                    "RATE_LIMITED.")
    delete_person: strawberry.ID = strawberry.mutation(
        resolver=r_persons.delete_person,
        description="Deletes a person and the comments on them; their lists stay, for no one. "
                    "Returns the deleted ID. Errors: UNAUTHENTICATED, NOT_FOUND, RATE_LIMITED.")
    create_occasion: types.Occasion = strawberry.mutation(
        resolver=r_persons.create_occasion,
        description="Adds an occasion. Errors: UNAUTHENTICATED, BAD_USER_INPUT, RATE_LIMITED.")
    update_occasion: types.Occasion = strawberry.mutation(
        resolver=r_persons.update_occasion,
        description="Changes an occasion. Errors: UNAUTHENTICATED, NOT_FOUND, BAD_USER_INPUT, "
                    "RATE_LIMITED.")
    delete_occasion: strawberry.ID = strawberry.mutation(
        resolver=r_persons.delete_occasion,
        description="Deletes an occasion and the comments on it; its lists stay, for no "
                    "occasion. Returns the deleted ID. Errors: UNAUTHENTICATED, NOT_FOUND, "
                    "RATE_LIMITED.")
    create_list: types.GiftList = strawberry.mutation(
        resolver=r_lists.create_list,
        description="Creates a gift list owned by the caller. Errors: UNAUTHENTICATED, NOT_FOUND "
                    "(personId, occasionId), BAD_USER_INPUT, RATE_LIMITED.")
    update_list: types.GiftList = strawberry.mutation(
        resolver=r_lists.update_list,
        description="Changes a list (any member may), e.g. moves it to another person or "
                    "occasion. Errors: UNAUTHENTICATED, NOT_FOUND (the list, personId, "
                    "occasionId), BAD_USER_INPUT, RATE_LIMITED.")
    delete_list: strawberry.ID = strawberry.mutation(
        resolver=r_lists.delete_list,
        description="Deletes a list with its items and the comments on them (the gifts stay); "
                    "only its owner or an ADMIN may. Returns the deleted ID. Errors: "
                    "UNAUTHENTICATED, FORBIDDEN (neither the owner nor an ADMIN), NOT_FOUND, "
                    "RATE_LIMITED.")
    create_gift: types.Gift = strawberry.mutation(
        resolver=r_gifts.create_gift,
        description="Adds a gift, on no list yet (see addListItem). Errors: UNAUTHENTICATED, "
                    "BAD_USER_INPUT, RATE_LIMITED.")
    update_gift: types.Gift = strawberry.mutation(
        resolver=r_gifts.update_gift,
        description="Changes a gift, on every list it is on. Errors: UNAUTHENTICATED, NOT_FOUND, "
                    "BAD_USER_INPUT, RATE_LIMITED.")
    delete_gift: strawberry.ID = strawberry.mutation(
        resolver=r_gifts.delete_gift,
        description="Deletes a gift and the comments on it. A gift still on a list can't be "
                    "deleted: remove its items first. Returns the deleted ID. Errors: "
                    "UNAUTHENTICATED, NOT_FOUND, CONFLICT (still on a list), RATE_LIMITED.")
    add_list_item: types.ListItem = strawberry.mutation(
        resolver=r_lists.add_list_item,
        description="Puts a gift on a list, at IDEA: an existing gift (giftId) or a new one "
                    "(gift). Errors: UNAUTHENTICATED, NOT_FOUND (the list, giftId), "
                    "BAD_USER_INPUT (also not exactly one of giftId and gift), RATE_LIMITED.")
    update_list_item: types.ListItem = strawberry.mutation(
        resolver=r_lists.update_list_item,
        description="Changes an item's quantity, notes or gift. Errors: UNAUTHENTICATED, "
                    "NOT_FOUND (the item, giftId), BAD_USER_INPUT, RATE_LIMITED.")
    remove_list_item: strawberry.ID = strawberry.mutation(
        resolver=r_lists.remove_list_item,
        description="Takes an item off its list, with the comments on it (the gift stays). "
                    "Returns the removed ID. Errors: UNAUTHENTICATED, NOT_FOUND, RATE_LIMITED.")
    set_list_item_status: types.ListItem = strawberry.mutation(
        resolver=r_lists.set_list_item_status,
        description="Moves an item one step along IDEA → SELECTED → PURCHASED → RECEIVED, "
                    "forward or back; anything else (a skip, or the status it has) is "
                    "INVALID_TRANSITION, whose extensions list the `allowed` statuses. Errors: "
                    "UNAUTHENTICATED, NOT_FOUND, INVALID_TRANSITION, RATE_LIMITED.")
    assign_list_item: types.ListItem = strawberry.mutation(
        resolver=r_lists.assign_list_item,
        description="Makes an active member responsible for an item, or nobody (userId null). "
                    "Errors: UNAUTHENTICATED, NOT_FOUND (the item, userId), BAD_USER_INPUT (a "
                    "deactivated member), RATE_LIMITED.")
    add_comment: types.Comment = strawberry.mutation(
        resolver=r_comments.add_comment,
        description="Comments on a list, item, gift, person or occasion of the family. Errors: "
                    "UNAUTHENTICATED, NOT_FOUND (the target), BAD_USER_INPUT, RATE_LIMITED.")
    delete_comment: strawberry.ID = strawberry.mutation(
        resolver=r_comments.delete_comment,
        description="Deletes a comment; only its author or an ADMIN may. Returns the deleted ID. "
                    "Errors: UNAUTHENTICATED, FORBIDDEN (neither the author nor an ADMIN), "
                    "NOT_FOUND, RATE_LIMITED.")


class GiftGraphSchema(strawberry.Schema):
    # Strawberry's, or the fast paths' (giftgraph.accel.hooks: set by `FastPaths`)
    extensions_runner_class: type[SchemaExtensionsRunner] = SchemaExtensionsRunner
    # The analysis allowance its parse uses, for parses ahead of an operation (`preparse`)
    analysis: Allowance | None = None

    def create_extensions_runner(self, execution_context: Any,
                                 extensions: list[Any]) -> SchemaExtensionsRunner:
        return self.extensions_runner_class(execution_context=execution_context,
                                            extensions=extensions)

    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        """FormatErrors logs what matters (with traceId); skip Strawberry's default log."""

    async def stream(self, query: str | None, variable_values: dict[str, Any] | None = None,
                     context_value: Any | None = None, root_value: Any | None = None,
                     operation_name: str | None = None,
                     operation_extensions: dict[str, Any] | None = None,
                     allowed_operation_types: Any = None) -> Any:
        """Strawberry's; a `query @live` (over a socket: graphql-live-query's convention)
        runs as the live subscription of its selection (giftgraph.live.directive)."""
        settings = getattr(context_value, "settings", None)
        if settings is not None and isinstance(getattr(context_value, "connection_params", None),
                                               dict):
            live = None
            if may_be_live(query, settings.max_query_chars):
                assert query is not None
                document = await preparse(query, settings.max_query_tokens,
                                          caller_key(context_value), self.analysis)
                if document is not None:
                    live = live_subscription_of(document, operation_name)
            if live is not None:
                rewritten, parsed = live
                # The operation's parse finds it made (of the query's nodes: its errors'
                # locations are the query's), not parsed again from the printed text.
                PARSED.keep(rewritten, settings.max_query_tokens, parsed, source=query)
                pending = REGISTERING.get()  # an APQ registration of the `query @live` text
                if pending is not None and pending.document == query:
                    pending.runs = rewritten
                query = rewritten
                UNWRAPPED.set(True)  # this operation's task only
        return await super().stream(query, variable_values, context_value, root_value,
                                    operation_name, operation_extensions,
                                    allowed_operation_types)


def build_schema(settings: Settings | None = None,
                 fast: FastPaths | None = None, tracing: Any = None) -> strawberry.Schema:
    """The schema for `settings`, executed through `fast` (giftgraph.accel; by default
    what `install(settings)` turns on), traced when `tracing` (giftgraph.tracing) is on."""
    settings = settings or Settings(_env_file=None)
    fast = fast if fast is not None else install(settings)
    introspection = settings.introspection
    if introspection is None:
        introspection = not settings.is_production
    # Production suggests no name in any error (graphql-core's `hide_suggestions`, in
    # validation and in execution): the names are pieces of the schema.
    suggest = not settings.is_production
    validate = ValidationCache(suggest=suggest)
    # Parsing and validating new documents, per caller (admission.checks): one allowance.
    analysis = analysis_allowance(settings)
    extensions: list[Any] = [
        # The operation's span first: parse, validate and execute are its children.
        *([tracing.schema_extension()] if tracing is not None else []),
        OperationLog, RequestScope, FormatErrors, RefuseNul,
        lambda: ParseWithTokenLimit(settings.max_query_tokens,
                                     max_chars=settings.max_query_chars, allowance=analysis),
        DocumentBounds,  # measures before validation; charges mutations before execution
        lambda: FreshValidationCache(
            validate, lambda ctx, seconds, size: charge(
                analysis, analysis_keys(caller_key(ctx), size), seconds),
            analysed),
        ChooseOperation,  # after the validation
        RegisterPersisted,  # an APQ registration, once its operation reaches execution
    ]
    if settings.result_cache_bytes:
        store = ResultStore(settings.result_cache_bytes)  # one per schema: per app
        extensions.append(lambda: ResultCache(store))  # last: after every refusal
    if not introspection:
        extensions.append(DisableIntrospection)
    schema = GiftGraphSchema(
        query=Query,
        mutation=Mutation,
        subscription=LiveSubscription,
        types=[types.Family, types.User, types.Person, types.Occasion, types.GiftList,
               types.Gift, types.ListItem, types.Comment, types.Event, types.Presence],
        extensions=extensions,
        execution_context_class=fast.execution_context_class(suggest),
        scalar_overrides=SCALAR_OVERRIDES,
    )
    schema.analysis = analysis
    fast.install_schema(schema)
    install_retries(schema)
    return schema
