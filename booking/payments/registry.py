"""Which payment providers this deployment offers, built once from settings."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking.errors import PaymentProviderUnavailable
from booking.payments.breaker import GuardedGateway, ProviderBreaker
from booking.payments.gateway import Gateway
from booking.payments.models import PaymentProvider
from booking.payments.offline import OfflineGateway
from booking.settings import Settings


class Gateways:
    """The configured providers: the offline test provider unless turned off, Stripe when a
    secret key is set; and a breaker for each (``booking.payments.breaker``), which lives as
    long as this object: the API's for its process, a job's for its run.

    ``breaker_metrics`` makes the breakers report their state (see ``ProviderBreaker``)."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        breaker_metrics: bool = True,
    ) -> None:
        self.by_provider: dict[PaymentProvider, Gateway] = {}
        self.breakers: dict[PaymentProvider, ProviderBreaker] = {}
        self._settings = settings
        self._breaker_metrics = breaker_metrics
        if settings.offline_payments:
            self.by_provider[PaymentProvider.OFFLINE] = OfflineGateway(sessions)
        if settings.stripe_secret_key is not None:
            # Imported only where Stripe is configured: the SDK takes a fifth of a second to
            # import, which every CLI command that reads orders or holds would otherwise pay.
            from booking.payments.stripe_gateway import StripeGateway

            secret = settings.stripe_secret_key.get_secret_value()
            self.by_provider[PaymentProvider.STRIPE] = StripeGateway(
                secret, api_base=settings.stripe_api_base
            )
        for provider in self.by_provider:
            self.breaker(provider)

    async def __aenter__(self) -> Gateways:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close provider connections (they belong to the event loop that opened them)."""
        for gateway in self.by_provider.values():
            close = getattr(gateway, "aclose", None)
            if close is not None:
                await close()

    def get(self, provider: PaymentProvider | str) -> Gateway:
        """Raises: PaymentProviderUnavailable."""
        try:
            return self.by_provider[PaymentProvider(provider)]
        except (KeyError, ValueError):
            offered = ", ".join(p.value for p in self.by_provider) or "none"
            raise PaymentProviderUnavailable(f"Offered here: {offered}.") from None

    def breaker(self, provider: PaymentProvider | str) -> ProviderBreaker:
        """The provider's breaker (made on first use for a provider added later).

        Raises: PaymentProviderUnavailable."""
        gateway = self.get(provider)
        found = self.breakers.get(gateway.provider)
        if found is None:
            found = self.breakers[gateway.provider] = ProviderBreaker.from_settings(
                gateway.provider, self._settings, export_metrics=self._breaker_metrics
            )
        return found

    def guarded(self, provider: PaymentProvider | str) -> Gateway:
        """The provider's gateway with every call admitted by its breaker: while it is paused
        each call raises ``ProviderPaused`` at once.

        Raises: PaymentProviderUnavailable."""
        return GuardedGateway(self.get(provider), self.breaker(provider))
