"""Assembles Query, Mutation (and Subscription) into one Strawberry schema."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import DisableIntrospection
from strawberry.schema.config import StrawberryConfig

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
    MutationRateLimit,
    RefuseNul,
    RequestScope,
)
from giftgraph.schema.limits import ParseWithTokenLimit, QueryLimits
from giftgraph.schema.retry import install_retries


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

    @staticmethod
    def remove_field_suggestion(error: GraphQLError) -> None:
        """Where field suggestions are off (production), every suggestion is: of an enum
        value, an argument, a type or an input field too, each a piece of the schema.
        graphql-core always ends a message with its suggestion (`did_you_mean`)."""
        head, found, tail = error.message.rpartition(" Did you mean ")
        if found and tail.endswith("?"):
            error.message = head
            error.args = (head,)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings(_env_file=None)  # type: ignore[call-arg]
    introspection = settings.introspection
    if introspection is None:
        introspection = not settings.is_production
    extensions: list[Any] = [
        OperationLog, RequestScope, FormatErrors, RefuseNul, MutationRateLimit, QueryLimits,
        lambda: ParseWithTokenLimit(settings.max_query_tokens, maxsize=512),
        lambda: FreshValidationCache(maxsize=512), ChooseOperation,  # after the cache
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
        execution_context_class=ExecutionContext,
        config=StrawberryConfig(disable_field_suggestions=settings.is_production),
    )
    install_lean_resolvers(schema)
    install_retries(schema)
    return schema
