"""Assembles Query, Mutation (and Subscription) into one Strawberry schema."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.extensions import DisableIntrospection

from giftgraph.admission.documents import DocumentBounds, ParseWithTokenLimit
from giftgraph.config import Settings
from giftgraph.observability import OperationLog
from giftgraph.resolvers import comments as r_comments
from giftgraph.resolvers import gifts as r_gifts
from giftgraph.resolvers import lists as r_lists
from giftgraph.resolvers import persons as r_persons
from giftgraph.resolvers import queries as r_queries
from giftgraph.resolvers import users as r_users
from giftgraph.resolvers.subscriptions import Subscription
from giftgraph.schema import types
from giftgraph.schema.cache import ResultCache, ResultStore
from giftgraph.schema.connection import Connection
from giftgraph.schema.execution import ExecutionContext, install_lean_resolvers
from giftgraph.schema.extensions import (
    ChooseOperation,
    FormatErrors,
    FreshValidationCache,
    RefuseNul,
    RequestScope,
    validation_cache,
)
from giftgraph.schema.retry import install_retries
from giftgraph.schema.scalars import SCALAR_OVERRIDES


@strawberry.type
class Query:
    node: types.Node | None = strawberry.field(resolver=r_queries.node)
    me: types.User = strawberry.field(resolver=r_users.me)
    family: types.Family = strawberry.field(resolver=r_users.family)
    users: Connection[types.User] = strawberry.field(resolver=r_users.users)
    persons: Connection[types.Person] = strawberry.field(resolver=r_persons.persons)
    occasions: Connection[types.Occasion] = strawberry.field(resolver=r_persons.occasions)
    lists: Connection[types.GiftList] = strawberry.field(resolver=r_lists.lists)
    gifts: Connection[types.Gift] = strawberry.field(resolver=r_gifts.gifts)
    comments: Connection[types.Comment] = strawberry.field(resolver=r_comments.comments)
    events: Connection[types.Event] = strawberry.field(resolver=r_queries.events)
    dashboard: r_queries.Dashboard = strawberry.field(resolver=r_queries.dashboard)


@strawberry.type
class Mutation:
    sign_up: types.AuthPayload = strawberry.mutation(resolver=r_users.sign_up)
    login: types.AuthPayload = strawberry.mutation(resolver=r_users.login)
    refresh_token: types.AuthPayload = strawberry.mutation(resolver=r_users.refresh_token)
    logout: bool = strawberry.mutation(resolver=r_users.logout)
    update_family: types.Family = strawberry.mutation(
        resolver=r_users.update_family,
        description="An ADMIN changes the family's name or currency (FORBIDDEN for a member).")
    register_user: types.User = strawberry.mutation(resolver=r_users.register_user)
    update_user: types.User = strawberry.mutation(resolver=r_users.update_user)
    delete_user: strawberry.ID = strawberry.mutation(resolver=r_users.delete_user)
    create_person: types.Person = strawberry.mutation(resolver=r_persons.create_person)
    update_person: types.Person = strawberry.mutation(resolver=r_persons.update_person)
    delete_person: strawberry.ID = strawberry.mutation(resolver=r_persons.delete_person)
    create_occasion: types.Occasion = strawberry.mutation(resolver=r_persons.create_occasion)
    update_occasion: types.Occasion = strawberry.mutation(resolver=r_persons.update_occasion)
    delete_occasion: strawberry.ID = strawberry.mutation(resolver=r_persons.delete_occasion)
    create_list: types.GiftList = strawberry.mutation(resolver=r_lists.create_list)
    update_list: types.GiftList = strawberry.mutation(resolver=r_lists.update_list)
    delete_list: strawberry.ID = strawberry.mutation(resolver=r_lists.delete_list)
    create_gift: types.Gift = strawberry.mutation(resolver=r_gifts.create_gift)
    update_gift: types.Gift = strawberry.mutation(resolver=r_gifts.update_gift)
    delete_gift: strawberry.ID = strawberry.mutation(resolver=r_gifts.delete_gift)
    add_list_item: types.ListItem = strawberry.mutation(resolver=r_lists.add_list_item)
    update_list_item: types.ListItem = strawberry.mutation(resolver=r_lists.update_list_item)
    remove_list_item: strawberry.ID = strawberry.mutation(resolver=r_lists.remove_list_item)
    set_list_item_status: types.ListItem = strawberry.mutation(
        resolver=r_lists.set_list_item_status)
    assign_list_item: types.ListItem = strawberry.mutation(resolver=r_lists.assign_list_item)
    add_comment: types.Comment = strawberry.mutation(resolver=r_comments.add_comment)
    delete_comment: strawberry.ID = strawberry.mutation(resolver=r_comments.delete_comment)


class GiftGraphSchema(strawberry.Schema):
    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        """FormatErrors logs what matters (with traceId); skip Strawberry's default log."""


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings(_env_file=None)  # type: ignore[call-arg]
    introspection = settings.introspection
    if introspection is None:
        introspection = not settings.is_production
    # Production suggests no name in any error (graphql-core's `hide_suggestions`, in
    # validation and in execution): the names are pieces of the schema.
    suggest = not settings.is_production
    validate = validation_cache(512, suggest=suggest)
    extensions: list[Any] = [
        OperationLog, RequestScope, FormatErrors, RefuseNul,
        lambda: ParseWithTokenLimit(settings.max_query_tokens, maxsize=512,
                                     max_chars=settings.max_query_chars),
        DocumentBounds,  # measures before validation; charges mutations before execution
        lambda: FreshValidationCache(validate), ChooseOperation,  # after the validation
    ]
    if settings.result_cache_bytes:
        store = ResultStore(settings.result_cache_bytes)  # one per schema: per app
        extensions.append(lambda: ResultCache(store))  # last: after every refusal
    if not introspection:
        extensions.append(DisableIntrospection)
    schema = GiftGraphSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[types.Family, types.User, types.Person, types.Occasion, types.GiftList,
               types.Gift, types.ListItem, types.Comment, types.Event, types.Presence],
        extensions=extensions,
        execution_context_class=ExecutionContext if suggest else ExecutionContext.quiet(),
        scalar_overrides=SCALAR_OVERRIDES,
    )
    install_lean_resolvers(schema)
    install_retries(schema)
    return schema
