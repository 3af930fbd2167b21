"""Every mapped table, imported in one place so the metadata (and Alembic) sees them all."""

from booking.accounts.models import Fan, FanSession, StaffKey, StaffRole
from booking.catalog.models import (
    Category,
    Event,
    EventStatus,
    GAArea,
    PriceTier,
    Seat,
    SeatingLayout,
    SeatRow,
    Section,
    Venue,
)
from booking.db import Base
from booking.holds.models import Hold, HoldItem, HoldState
from booking.idempotency import IdempotencyKey
from booking.inventory.models import InventoryUnit
from booking.ops.models import ActorType, AuditEntry, Outcome
from booking.orders.models import Order, OrderChannel, OrderItem, OrderItemState, OrderState
from booking.outbox import OutboxMessage
from booking.payments.models import (
    OfflinePayment,
    Payment,
    PaymentProvider,
    PaymentState,
    Refund,
    RefundState,
)
from booking.tickets.models import Ticket, TicketState
from booking.waiting_room.models import AdmissionRecord, WaitingRoom

metadata = Base.metadata

__all__ = [
    "ActorType",
    "AdmissionRecord",
    "AuditEntry",
    "Base",
    "Category",
    "Event",
    "EventStatus",
    "Fan",
    "FanSession",
    "GAArea",
    "Hold",
    "HoldItem",
    "HoldState",
    "IdempotencyKey",
    "InventoryUnit",
    "OfflinePayment",
    "Order",
    "OrderChannel",
    "OrderItem",
    "OrderItemState",
    "OrderState",
    "OutboxMessage",
    "Outcome",
    "Payment",
    "PaymentProvider",
    "PaymentState",
    "PriceTier",
    "Refund",
    "RefundState",
    "Seat",
    "SeatRow",
    "SeatingLayout",
    "Section",
    "StaffKey",
    "StaffRole",
    "Ticket",
    "TicketState",
    "Venue",
    "WaitingRoom",
    "metadata",
]
