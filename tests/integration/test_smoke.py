"""The user journey of the README: sign up, plan a gift, move it along, see the dashboard."""

from __future__ import annotations

from tests.conftest import Account

FLOW_PERSON = 'mutation { createPerson(input: {name: "Mom", interests: ["books"]}) { id } }'


async def test_gift_planning_flow_updates_dashboard(alice: Account) -> None:
    c = alice.client
    person = (await c(FLOW_PERSON)).data["createPerson"]["id"]
    occasion = (await c(
        'mutation { createOccasion(input: {name: "Xmas", kind: HOLIDAY, date: "2099-12-25",'
        ' budget: "300.00"}) { id budget } }'
    )).data["createOccasion"]
    assert occasion["budget"] == "300.00"
    gift_list = (await c(
        "mutation($p: ID, $o: ID) { createList(input: {name: \"Mom's\", kind: GIFT_PLAN,"
        " personId: $p, occasionId: $o}) { id person { name } occasion { name } } }",
        {"p": person, "o": occasion["id"]},
    )).data["createList"]
    assert gift_list["person"] == {"name": "Mom"}
    item = (await c(
        "mutation($l: ID!) { addListItem(listId: $l, input: {gift: {name: \"Book\","
        ' url: "https://www.bookshop.org/b/1", price: "20.00"}, quantity: 2})'
        " { id status gift { store price currency } } }",
        {"l": gift_list["id"]},
    )).data["addListItem"]
    assert item["status"] == "IDEA"
    assert item["gift"] == {"store": "bookshop.org", "price": "20.00", "currency": "USD"}

    for status in ("SELECTED", "PURCHASED"):
        r = await c("mutation($i: ID!, $s: ItemStatus!) { setListItemStatus(id: $i, status: $s)"
                    " { status } }", {"i": item["id"], "s": status})
        assert r.data["setListItemStatus"]["status"] == status

    dash = (await c(
        "{ dashboard { pipeline { idea selected purchased received } budget spent"
        " people { person { name } spent pipeline { purchased } } nextOccasions { name }"
        " activity { kind entityType } recentIdeas { id } } }"
    )).data["dashboard"]
    assert dash["pipeline"] == {"idea": 0, "selected": 0, "purchased": 1, "received": 0}
    assert dash["budget"] == "300.00"
    assert dash["spent"] == "40.00"
    assert dash["people"] == [{"person": {"name": "Mom"}, "spent": "40.00",
                               "pipeline": {"purchased": 1}}]
    assert dash["nextOccasions"] == [{"name": "Xmas"}]
    assert dash["activity"][0] == {"kind": "STATUS_CHANGED", "entityType": "ListItem"}
    assert dash["recentIdeas"] == []
