"""Event builders and hypothesis strategies for the pure-domain unit tests."""

from datetime import UTC, datetime, timedelta
from functools import reduce

import orderfleet.models as models
from hypothesis import settings
from hypothesis import strategies as st

ORDER = "o-1"
T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)

PROPERTY = settings(max_examples=150, deadline=None)


def ts(minutes=0, seconds=0):
    """T0 plus an offset, as RFC 3339 text with a Z."""
    return (T0 + timedelta(minutes=minutes, seconds=seconds)).isoformat().replace("+00:00", "Z")


def wire(event_type, *, order_id=ORDER, at=0, event_id=None, **fields):
    """A wire dict; `at` is minutes after T0 or an RFC 3339 string."""
    data = {
        "eventType": event_type,
        "orderId": order_id,
        "timestamp": at if isinstance(at, str) else ts(at),
        **fields,
    }
    if event_id is not None:
        data["eventId"] = event_id
    return data


def order_created(*, total="99.99", customer_id="c-9", currency="USD", items=(), **kw):
    return models.parse_event(
        wire(
            "OrderCreated",
            customerId=customer_id,
            totalAmount=total,
            currency=currency,
            items=list(items),
            **kw,
        )
    )


def inventory_reserved(*, reserved=None, warehouse="w-1", **kw):
    reserved = {"sku-1": 2} if reserved is None else reserved
    return models.parse_event(
        wire("InventoryReserved", reservedItems=reserved, warehouseId=warehouse, **kw)
    )


def payment_processed(*, amount="99.99", status="successful", transaction_id="t-1", **kw):
    return models.parse_event(
        wire(
            "PaymentProcessed",
            transactionId=transaction_id,
            amount=amount,
            status=status,
            method="card",
            **kw,
        )
    )


def shipping_calculated(*, cost="5.00", days=3, carriers=(), **kw):
    return models.parse_event(
        wire(
            "ShippingCalculated",
            shippingCost=cost,
            estimatedDays=days,
            carrierOptions=list(carriers),
            **kw,
        )
    )


def loyalty_points_updated(*, earned=10, total=110, tier="silver", **kw):
    return models.parse_event(
        wire("LoyaltyPointsUpdated", pointsEarned=earned, totalPoints=total, tierStatus=tier, **kw)
    )


def fold(events, order_id=ORDER, state=None):
    """Apply events one by one in arrival order (no sorting, no dedupe)."""
    start = models.OrderState(order_id=order_id) if state is None else state
    return reduce(lambda s, e: s.apply(e), events, start)


# ---------------------------------------------------------------- hypothesis strategies

_OFFSETS = {0: "Z", 120: "+02:00", -330: "-05:30"}


@st.composite
def timestamps(draw):
    """A few instants (so ties are common), written with various offsets and fractions.

    `.123456` and `.123456789` are the same instant once truncated to microseconds.
    """
    minute = draw(st.integers(0, 3))
    fraction = draw(st.sampled_from(["", ".5", ".123456", ".123456789", ".1234569"]))
    offset = draw(st.sampled_from(sorted(_OFFSETS)))
    local = T0 + timedelta(minutes=minute + offset)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + _OFFSETS[offset]


event_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=3)
amounts = st.sampled_from(["0", "10", "10.00", 10, "99.99", 99.99, "100"])
totals = st.sampled_from(["10", "10.00", 10, "99.99", 99.99])  # equal half the time
_unknown = {"promoCode": st.sampled_from(["X", "Y"])}

_items = st.fixed_dictionaries(
    {"sku": st.sampled_from(["sku-1", "sku-2"]), "quantity": st.integers(1, 3)},
    optional={"unitPrice": amounts},
)
_carriers = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["ups", "dhl"]),
        "cost": amounts,
        "estimatedDays": st.integers(0, 5),
    }
)

PAYLOADS = {
    "OrderCreated": st.fixed_dictionaries(
        {
            "customerId": st.sampled_from(["c-1", "c-2"]),
            "totalAmount": totals,
            "currency": st.sampled_from(["USD", "eur"]),
            "items": st.lists(_items, max_size=2),
        },
        optional=_unknown,
    ),
    "InventoryReserved": st.fixed_dictionaries(
        {
            "reservedItems": st.dictionaries(
                st.sampled_from(["sku-1", "sku-2"]),
                st.sampled_from([0, 1, 2, 2]),
                min_size=1,
                max_size=2,
            ),
            "warehouseId": st.sampled_from(["w-1", "w-2"]),
        },
        optional=_unknown,
    ),
    "PaymentProcessed": st.fixed_dictionaries(
        {
            "transactionId": st.sampled_from(["t-1", "t-2"]),
            "amount": totals,
            "status": st.sampled_from(["successful", "successful", "failed", "pending"]),
        },
        optional={"method": st.sampled_from(["card", "paypal"]), **_unknown},
    ),
    "ShippingCalculated": st.fixed_dictionaries(
        {
            "shippingCost": amounts,
            "estimatedDays": st.integers(0, 7),
            "carrierOptions": st.lists(_carriers, max_size=2),
        },
        optional=_unknown,
    ),
    "LoyaltyPointsUpdated": st.fixed_dictionaries(
        {
            "pointsEarned": st.integers(-50, 50),
            "totalPoints": st.integers(0, 500),
            "tierStatus": st.sampled_from(["silver", "gold"]),
        },
        optional=_unknown,
    ),
}


@st.composite
def events_of(draw, event_type, event_id=None, order_id=ORDER):
    """One event; without `event_id` its id is derived from its content."""
    data = {
        "eventType": event_type,
        "orderId": order_id,
        "timestamp": draw(timestamps()),
        **draw(PAYLOADS[event_type]),
    }
    if event_id is not None:
        data["eventId"] = event_id
    return models.parse_event(data)


@st.composite
def event_sets(draw, min_each=0, max_extra=8, order_id=ORDER):
    """Distinct events (unique eventIds) of one order; `min_each` of every type at least."""
    kinds = [kind for kind in models.EVENT_TYPES for _ in range(min_each)]
    kinds += draw(
        st.lists(
            st.sampled_from(list(models.EVENT_TYPES)),
            min_size=0 if min_each else 1,
            max_size=max_extra,
        )
    )
    ids = draw(st.lists(event_ids, min_size=len(kinds), max_size=len(kinds), unique=True))
    distinct = {}
    for kind, event_id in zip(kinds, ids, strict=True):
        explicit = draw(st.booleans())
        event = draw(events_of(kind, event_id if explicit else None, order_id))
        distinct.setdefault(event.event_id, event)  # equal derived ids: the same event
    return list(distinct.values())


@st.composite
def deliveries(draw, events):
    """Every event at least once, some re-delivered (equal copies), in any order."""
    again = draw(st.lists(st.sampled_from(events), max_size=4))
    copies = [models.parse_event(e.to_wire()) for e in again]
    return draw(st.permutations(events + copies))
