"""The published figures of docs/calibration.md as constants the generator draws from.

Where no figure is published, the value here is marked *assumed* and chosen to be
plausible and to leave the published figures intact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "AGE_BANDS",
    "EVACUATION_SHARED_IN_ADVANCE",
    "FOOD_ACCESS_DIFFICULT",
    "LIVING_ALONE_65",
    "LIVING_ALONE_AGE_FACTOR",
    "TELEWORK_DAYS_MEAN",
    "TELEWORK_REGIONAL",
    "BIRTH_ORDER",
    "BMI_BANDS",
    "HDP_LOG_ODDS_RATIOS",
    "HOKKAIDO_LBW_RATE",
    "IWAMIZAWA_LBW_TARGETS",
    "LBW_LOG_ODDS_RATIOS",
    "PURCHASE_MIX",
]

#: Maternal age bands (low, high exclusive, share of births), 2015 vital statistics.
AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (15, 20, 0.012),
    (20, 25, 0.084),
    (25, 30, 0.261),
    (30, 35, 0.363),
    (35, 40, 0.227),
    (40, 45, 0.052),
    (45, 50, 0.001),
)

#: Birth order shares: 1st, 2nd, 3rd, 4th+ (vital statistics 2015).
BIRTH_ORDER: tuple[float, ...] = (0.474, 0.361, 0.130, 0.036)

#: Pre-pregnancy BMI bands (low, high exclusive, share). <17, 17-18.4, 18.5-19.9, 25-29.9
#: and >=30 are published (JECS 2022, JSOG 2013); the 49.3 % of 20-24.9 is split
#: 36.0 / 13.3 between 20-22.9 and 23-24.9 (*assumed*).
BMI_BANDS: tuple[tuple[float, float, float], ...] = (
    (14.5, 17.0, 0.027),
    (17.0, 18.5, 0.129),
    (18.5, 20.0, 0.245),
    (20.0, 23.0, 0.360),
    (23.0, 25.0, 0.133),
    (25.0, 30.0, 0.077),
    (30.0, 38.0, 0.029),
)

SMOKING_RATE = 0.05  # Hokkaido, 4-6 %
ALCOHOL_RATE = 0.02  # 1.3-2.8 %
HDP_RATE = 0.03  # 1.9-3.5 %
#: Blood pressure before pregnancy (systolic, mmHg): mean at BMI 21 and age 30, rise per
#: BMI unit and spread between women (*assumed*, near the national nutrition survey's
#: women in their 20s and 30s).
SBP_PRE_MEAN, SBP_PRE_PER_BMI, SBP_PRE_SD = 106.0, 1.0, 10.0

#: Adjusted log odds ratios of HDP. BMI 25-29.9 and >= 30 vs 18.5-24.9: 1.60 and 3.42
#: (KODMO study, Matoba et al., Endocrine Journal). Systolic pressure per 10 mmHg: 2.0,
#: *derived* conservatively from Ohkuchi et al. 2006 (Hypertens Res 29:161), where
#: "normal" (120-129) against optimal (< 120) second-trimester pressure gave OR 5.1
#: (preeclampsia) and 7.0 (gestational hypertension) adjusted for BMI, about 2.9 per
#: 10 mmHg; pressure measured before pregnancy predicts less (*assumed*). Age >= 35 and
#: a first birth are *assumed*.
HDP_LOG_ODDS_RATIOS: Mapping[str, float] = {
    "sbp_10": math.log(2.0),
    "bmi_25_299": math.log(1.60),
    "bmi_ge30": math.log(3.42),
    "age_ge35": math.log(1.5),
    "primipara": math.log(1.35),
}

MULTIPLE_DELIVERY_RATE = 0.011  # of deliveries; ~2.2 % of newborns
FEMALE_SHARE = 0.487  # sex ratio at birth 105:100

#: GWG by BMI band (mean, sd) in kg, after the 2021 JSOG targets; *assumed* spread.
GWG_UNDER, GWG_NORMAL, GWG_OVER, GWG_OBESE = (12.0, 4.0), (11.0, 4.0), (8.5, 4.5), (6.0, 5.0)

#: Adjusted log odds ratios of the LBW model (reference: BMI 20-22.9, age 25-29,
#: multiparous singleton boy, non-smoker). Published: BMI bands, HDP, smoking, girl,
#: GWG (per kg, SGA OR used for LBW), dairy (per 100 g/day). Age bands are *assumed* so
#: that 30-34 vs 20-24 is 1.32 (JECS: 1.34 for first births) and 40+ is elevated;
#: multiple birth is *assumed* so that multiples make about 20 % of all LBW.
LBW_LOG_ODDS_RATIOS: Mapping[str, float] = {
    "bmi_lt17": math.log(2.55),
    "bmi_17_18": math.log(1.64),
    "bmi_185_199": math.log(1.23),
    "bmi_23_249": math.log(0.92),
    "bmi_25_299": math.log(0.85),
    "bmi_ge30": math.log(0.95),
    "age_lt20": math.log(1.25),
    "age_20_24": math.log(0.95),
    "age_30_34": math.log(1.25),
    "age_35_39": math.log(1.40),
    "age_ge40": math.log(1.90),
    "primipara": math.log(1.20),
    "smoking": math.log(1.70),
    "alcohol": math.log(1.20),
    "hdp": math.log(3.57),
    "female": math.log(1.29),
    "multiple": math.log(120.0),
    "gwg_kg": math.log(0.86),
    "dairy_100g": math.log(0.89),
}

#: Expected LBW rate of Iwamizawa by year: 10.4 % (2015), 7.8 % (2017), 6.3 % (2019)
#: published; the other years interpolate (*assumed*: ~10 % before the 2017 programme,
#: a plateau near 6.5 % after 2019).
IWAMIZAWA_LBW_TARGETS: Mapping[int, float] = {
    2013: 0.101,
    2014: 0.103,
    2015: 0.104,
    2016: 0.098,
    2017: 0.078,
    2018: 0.070,
    2019: 0.063,
    2020: 0.064,
    2021: 0.065,
    2022: 0.065,
    2023: 0.066,
    2024: 0.066,
    2025: 0.067,
}

#: Hokkaido LBW rate (vital statistics 2019), used for every year of the ``hokkaido`` preset.
HOKKAIDO_LBW_RATE = 0.092

#: Drugstore sales mix (METI 2017); the 2.3 % left over is ``other``.
PURCHASE_MIX: Mapping[str, float] = {
    "food": 0.268,
    "household": 0.153,
    "beauty": 0.150,
    "otc_drugs": 0.143,
    "toiletries": 0.096,
    "health_care_baby": 0.069,
    "dispensing": 0.064,
    "supplements": 0.034,
    "other": 0.023,
}

# -- the city's living services -------------------------------------------------------------

#: Share of people aged 65+ living alone (men, women): 13.3 / 21.1 % in 2015 and
#: 15.0 / 22.1 % in 2020 (census, as reported in the Cabinet Office's annual reports on the
#: ageing society); other years interpolate and stay flat outside 2015-2020.
LIVING_ALONE_65: Mapping[int, tuple[float, float]] = {2015: (0.133, 0.211), 2020: (0.150, 0.221)}
#: How living alone rises with age around the 65+ average (*assumed*): 65-74, 75-84, 85+.
LIVING_ALONE_AGE_FACTOR: tuple[float, float, float] = (0.85, 1.10, 1.25)

#: Share of people with difficult access to food shops (a shop 500 m or more away and no
#: car): 25.6 % of people 65+ and 31.0 % of people 75+ in 2020 (MAFF Policy Research
#: Institute); 65-74 about 19.4 % (*derived*: 9.04 M - 5.66 M of about 17.4 M).
FOOD_ACCESS_DIFFICULT: tuple[float, float] = (0.194, 0.310)

#: Share of people on a municipality's register of people needing help to evacuate whose
#: entry is given to local supporters before a disaster: 40.1 % (April 2025, Cabinet
#: Office and Fire and Disaster Management Agency survey).
EVACUATION_SHARED_IN_ADVANCE = 0.401

#: Employed people who telework, regional cities (MLIT telework population survey):
#: 17.2 % (2021), 17.5 % (2022). Before 2020: the national figure was about 15 %, and
#: regional cities ran at about two thirds of it in 2022 (17.5 / 26.1), so 10 % (*derived*);
#: 2020 15 % (*assumed*); after 2022 the national figure fell 26.1 -> 24.8 -> 24.6 %, so
#: 16.6 % (*derived*).
TELEWORK_REGIONAL: Mapping[int, float] = {
    2019: 0.100,
    2020: 0.150,
    2021: 0.172,
    2022: 0.175,
    2023: 0.166,
}
#: Mean telework days a week among teleworkers: 1.8 (MLIT survey 2022).
TELEWORK_DAYS_MEAN = 1.8
