"""A whole rater session in real Chromium: keyboard through consent, qualification, an
attention check and the end page; mouse and a blocked rater's page."""

from __future__ import annotations

import pytest

from ratings.models import Assignment, Judgment, Rater
from tests.ratings.factories import add_pairs, make_campaign, make_images

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def current_assignment(page, previous: str | None) -> Assignment:
    page.wait_for_function(
        "prev => { const r = document.getElementById('rater');"
        " return r && r.dataset.assignment && r.dataset.assignment !== prev; }",
        arg=previous or "",
    )
    public_id = page.get_attribute("#rater", "data-assignment")
    return Assignment.objects.select_related("pair").get(public_id=public_id)


def images_loaded(page) -> bool:
    return page.evaluate(
        "() => ['left','right'].every(id => { const i = document.getElementById(id);"
        " return i.complete && i.naturalWidth > 0; })"
    )


def test_keyboard_session_from_consent_to_completion_code(live_server, page):
    campaign = make_campaign(
        consent_text="I agree to take part.", instructions="Judge each pair.",
        qualification_size=2, pass_mark=1.0, attention_rate=1.0, gold_rate=0.0,
        judgments_per_pair=1, min_response_ms=1,
    )
    imgs = make_images(8)
    add_pairs(campaign, 1, kind="gold_same", images=imgs[0:2])
    add_pairs(campaign, 1, kind="gold_different", images=imgs[2:4])
    add_pairs(campaign, 1, kind="attention", images=imgs[4:6])
    add_pairs(campaign, 3, images=imgs)

    page.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=KEYS1&STUDY_ID=S&SESSION_ID=X")
    assert "PROLIFIC_PID" not in page.url  # ids stripped from the address bar
    assert page.locator("text=I agree to take part.").is_visible()
    page.keyboard.press("Enter")  # the agree button has focus

    seen_kinds, seen_phases, previous = [], [], None
    for _ in range(6):
        a = current_assignment(page, previous)
        previous = str(a.public_id)
        page.wait_for_function(
            "() => ['left','right'].every(id => document.getElementById(id).complete)"
        )
        assert images_loaded(page)
        seen_kinds.append(a.pair.kind)
        seen_phases.append(a.phase)
        if a.phase == "qualification":
            assert "Qualification" in page.inner_text("#phase-label")
        same = a.pair.expected_same if a.pair.expected_same is not None else True
        page.keyboard.press("f" if same else "j")
        assert page.locator("#confidence").is_visible()
        page.keyboard.press("4" if a.pair.kind != "deid" else "3")

    page.wait_for_url(f"**/rate/{campaign.slug}/done")
    assert page.inner_text("#completion-code") == campaign.completion_code
    assert seen_phases[:2] == ["qualification", "qualification"]
    assert sorted(seen_kinds[:2]) == ["gold_different", "gold_same"]
    assert seen_kinds[2] == "attention" and seen_kinds[3:] == ["deid"] * 3
    rater = Rater.objects.get(external_id="KEYS1")
    assert rater.qualified and not rater.blocked and rater.consented_at
    assert Judgment.objects.filter(rater=rater).count() == 6
    assert Judgment.objects.get(rater=rater, pair__kind="attention").correct is True
    html = page.content()
    assert "KEYS1" not in html and all(str(i.pk) not in html for i in imgs)


def test_mouse_and_blocked_rater_page(live_server, page):
    campaign = make_campaign(attention_rate=1.0, judgments_per_pair=1, min_response_ms=1)
    imgs = make_images(4)
    add_pairs(campaign, 1, kind="attention", images=imgs[:2])
    add_pairs(campaign, 2, images=imgs)
    page.goto(f"{live_server.url}/rate/{campaign.slug}/?workerId=MOUSE1&assignmentId=A&hitId=H")
    a = current_assignment(page, None)
    assert a.pair.kind == "attention"
    page.click("#ans-diff")  # wrong: the two images are identical
    page.click("[data-conf='4']")
    page.wait_for_selector("#blocked")
    assert "Thank you for your time" in page.inner_text("#blocked")
    rater = Rater.objects.get(external_id="MOUSE1")
    assert rater.blocked and rater.blocked_reason == "attention"
    page.goto(f"{live_server.url}/rate/{campaign.slug}/")  # coming back: still the polite page
    assert page.locator("#blocked").is_visible()


def test_small_things_copy_button_key_labels_and_no_key_hints_on_phones(live_server, browser):
    """The completion code copies with one click; the pressed answer's key label stays
    readable; a touch phone shows no keyboard hints."""
    campaign = make_campaign(judgments_per_pair=1, min_response_ms=1, consent_text="")
    imgs = make_images(4)
    add_pairs(campaign, 1, images=imgs)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page = context.new_page()
    page.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=SMALL1&STUDY_ID=S&SESSION_ID=X")
    current_assignment(page, None)
    page.keyboard.press("f")
    colours = page.evaluate(
        "() => { const b = document.getElementById('ans-same'), k = b.querySelector('kbd');"
        " return [getComputedStyle(b).backgroundColor, getComputedStyle(k).color,"
        " getComputedStyle(k).backgroundColor, b.getAttribute('aria-pressed')]; }")
    assert colours[3] == "true"
    assert colours[1] != colours[2]  # the key label's text is not the colour of its box
    page.keyboard.press("4")
    page.wait_for_url(f"**/rate/{campaign.slug}/done")
    page.click("#copy-code")
    page.wait_for_function("() => document.getElementById('copy-status').textContent !== ''")
    assert page.evaluate("() => navigator.clipboard.readText()") == campaign.completion_code
    context.close()

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                has_touch=True, device_scale_factor=3)
    p2 = phone.new_page()
    add_pairs(campaign, 1, images=imgs)
    p2.goto(f"{live_server.url}/rate/{campaign.slug}/?PROLIFIC_PID=PHONE1&STUDY_ID=S&SESSION_ID=X")
    current_assignment(p2, None)
    assert not p2.locator(".key-hints").is_visible()
    assert not p2.locator("#ans-same kbd").is_visible()
    assert p2.locator("#ans-same").is_visible()
    phone.close()
