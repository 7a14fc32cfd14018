"""What is in an atlas file? Its variables, constants, field recipes, paths and calendar.

Data only (plus the two small functions that name a month's file and its elapsed time): what
`fields` computes and `netcdf` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FILL_VALUE = np.float32(9.96921e36)


INJECTION_MONTHS: tuple[str, ...] = ("01", "04", "07", "10")


START_YEAR = 347  # model year of the first month of every series


Z_T_150M_LEVELS = 15


GENERATOR_VERSION = 1


# Global attribute that records how a file was generated (used to skip identical rewrites).
SAMPLE_ATTR = "vcube_sample"


DATA_VARS_3D: tuple[str, ...] = (
    "CO3",
    "pH_3D",
    "CO3_ALT_CO2",
    "pH_3D_ALT_CO2",
    "co3_sat_calc",
    "co3_sat_arag",
    "DIC",
    "DIC_ALT_CO2",
    "ALK",
    "ALK_ALT_CO2",
)


DATA_VARS_2D: tuple[str, ...] = (
    "CO2STAR",
    "DCO2STAR",
    "pCO2SURF",
    "DpCO2",
    "FG_CO2",
    "PH",
    "ATM_CO2",
    "CO2STAR_ALT_CO2",
    "DCO2STAR_ALT_CO2",
    "pCO2SURF_ALT_CO2",
    "DpCO2_ALT_CO2",
    "FG_ALT_CO2",
    "PH_ALT_CO2",
    "ALK_FLUX",
    "DIC_zint_100m",
    "DIC_ALT_CO2_zint_100m",
    "ALK_zint_100m",
    "STF_ALK",
    "ALK_ALT_CO2_zint_100m",
    "STF_ALK_ALT_CO2",
    "tend_zint_100m_DIC",
    "tend_zint_100m_DIC_ALT_CO2",
    "tend_zint_100m_ALK",
    "tend_zint_100m_ALK_ALT_CO2",
)


DATA_VARS: tuple[str, ...] = DATA_VARS_3D + DATA_VARS_2D


# Each `_ALT_CO2` twin -> its base field; they differ only inside the alkalinity plume.
TWINS: dict[str, str] = {
    "CO3_ALT_CO2": "CO3",
    "pH_3D_ALT_CO2": "pH_3D",
    "DIC_ALT_CO2": "DIC",
    "ALK_ALT_CO2": "ALK",
    "CO2STAR_ALT_CO2": "CO2STAR",
    "DCO2STAR_ALT_CO2": "DCO2STAR",
    "pCO2SURF_ALT_CO2": "pCO2SURF",
    "DpCO2_ALT_CO2": "DpCO2",
    "FG_ALT_CO2": "FG_CO2",
    "PH_ALT_CO2": "PH",
    "DIC_ALT_CO2_zint_100m": "DIC_zint_100m",
    "ALK_ALT_CO2_zint_100m": "ALK_zint_100m",
    "STF_ALK_ALT_CO2": "STF_ALK",
    "tend_zint_100m_DIC_ALT_CO2": "tend_zint_100m_DIC",
    "tend_zint_100m_ALK_ALT_CO2": "tend_zint_100m_ALK",
}


# The 2-D grid fields: name, the grid quantity `fields` fills it with, long name, units, grid.
GRID_2D: tuple[tuple[str, str, str, str, str], ...] = (
    ("ULONG", "ulon", "array of u-grid longitudes", "degrees_east", "U"),
    ("ULAT", "ulat", "array of u-grid latitudes", "degrees_north", "U"),
    ("TLONG", "tlon", "array of t-grid longitudes", "degrees_east", "T"),
    ("TLAT", "tlat", "array of t-grid latitudes", "degrees_north", "T"),
    ("UAREA", "uarea", "area of U cells", "centimeter^2", "U"),
    ("TAREA", "tarea", "area of T cells", "centimeter^2", "T"),
    ("HU", "hu", "ocean depth at U points", "centimeter", "U"),
    ("HT", "ht", "ocean depth at T points", "centimeter", "T"),
    ("DXU", "dxu", "x-spacing centered at U points", "centimeters", "U"),
    ("DYU", "dy", "y-spacing centered at U points", "centimeters", "U"),
    ("DXT", "dxt", "x-spacing centered at T points", "centimeters", "T"),
    ("DYT", "dy", "y-spacing centered at T points", "centimeters", "T"),
    ("HTN", "dxu", "cell widths on North sides of T cell", "centimeters", "T"),
    ("HTE", "dy", "cell widths on East sides of T cell", "centimeters", "T"),
    ("HUS", "dxt", "cell widths on South sides of U cell", "centimeters", "U"),
    ("HUW", "dy", "cell widths on West sides of U cell", "centimeters", "U"),
    ("ANGLE", "angle", "angle grid makes with latitude line", "radians", "U"),
    ("ANGLET", "anglet", "angle grid makes with latitude line on T grid", "radians", "T"),
)
GRID_FIELDS: tuple[str, ...] = (
    "ULONG",
    "ULAT",
    "TLONG",
    "TLAT",
    "UAREA",
    "TAREA",
    "HU",
    "HT",
    "DXU",
    "DYU",
    "DXT",
    "DYT",
    "HTN",
    "HTE",
    "HUS",
    "HUW",
    "ANGLE",
    "ANGLET",
)
GRID_INT_FIELDS: tuple[str, ...] = ("KMT", "KMU", "REGION_MASK")


VERTICAL_COORDS: tuple[str, ...] = ("z_t", "z_t_150m", "z_w", "z_w_top", "z_w_bot", "dz", "dzw")


DIM_COORDS: tuple[str, ...] = ("polygon_id", "injection_date", "elapsed_time")


TIME_VARS: tuple[str, ...] = ("time", "time_bound")


# name -> (value, units, long_name); POP2's cgs constants (rho_sw completes the 31).
_SCALARS: dict[str, tuple[float, str, str]] = {
    "T0_Kelvin": (273.15, "K", "Zero Point for Celsius"),
    "cp_air": (1005.0, "J/kg/K", "Heat Capacity of Air"),
    "cp_sw": (39960000.0, "erg/g/K", "Specific Heat of Sea Water"),
    "days_in_norm_year": (365.0, "days", "Calendar Length"),
    "fwflux_factor": (0.0001, "(m/s)/(kg/m^2/s)", "Convert Net Fresh Water Flux to Salt Flux"),
    "grav": (980.616, "cm/s^2", "Acceleration Due to Gravity"),
    "heat_to_PW": (4.186e-15, "PW/(cal/s)", "Convert Heat Flux to Petawatts"),
    "hflux_factor": (2.44200244200244e-05, "(degC*cm/s)/(W/m^2)", "Convert Heat Flux to T Flux"),
    "latent_heat_fusion": (3337000000.0, "erg/g", "Latent Heat of Fusion"),
    "latent_heat_fusion_mks": (333700.0, "J/kg", "Latent Heat of Fusion"),
    "latent_heat_vapor": (2501000.0, "J/kg", "Latent Heat of Vaporization"),
    "mass_to_Sv": (1e-12, "Sv/(g/s)", "Convert Mass Flux to Sverdrups"),
    "momentum_factor": (10.0, "dyne/cm^2/(N/m^2)", "Convert Windstress to Velocity Flux"),
    "nsurface_t": (0.0, "1", "Number of Ocean T Points at Surface"),  # set from the mask
    "nsurface_u": (0.0, "1", "Number of Ocean U Points at Surface"),  # set from the mask
    "ocn_ref_salinity": (34.7, "g/kg", "Ocean Reference Salinity"),
    "omega": (7.29212351699037e-05, "1/second", "Earths Angular Velocity"),
    "ppt_to_salt": (0.001, "1", "Convert Salt in g/kg to gram/gram"),
    "radius": (637122000.0, "cm", "Earths Radius"),
    "rho_air": (1.2922474, "kg/m^3", "Ambient Air Density"),
    "rho_fw": (1.0, "gram/cm^3", "Density of Fresh Water"),
    "rho_sw": (1.026, "gram/cm^3", "Density of Sea Water"),
    "salinity_factor": (-0.00347222222222222, "(msu*cm/s)/(kg/m^2/s)", "Salt Flux Factor"),
    "salt_to_Svppt": (1e-09, "(Sv*g/kg)/(g/s)", "Convert Salt Flux to Sverdrups*g/kg"),
    "salt_to_mmday": (315360000.0, "mm/day", "Convert Salt to Water (mm/day)"),
    "salt_to_ppt": (1000.0, "g/kg", "Convert Salt in gram/gram to g/kg"),
    "sea_ice_salinity": (4.0, "g/kg", "Salinity of Sea Ice"),
    "sflux_factor": (
        0.1,
        "(msu*cm/s)/(kg/m^2/s)",
        "Convert Salt Flux to Salt Flux (in model units)",
    ),
    "sound": (150000.0, "cm/s", "Speed of Sound"),
    "stefan_boltzmann": (5.67e-08, "W/m^2/K^4", "Stefan-Boltzmann Constant"),
    "vonkar": (0.4, "1", "von Karman Constant"),
}


SCALAR_CONSTANTS: tuple[str, ...] = tuple(_SCALARS)


_DEFLATE: dict[str, Any] = {"zlib": True, "complevel": 4, "shuffle": True}


_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


_DAYS_BEFORE_MONTH = np.concatenate([[0], np.cumsum(_DAYS_IN_MONTH)[:-1]])


_TOTAL_DEPTH_CM = 537500.0  # POP's 60-level grid reaches 5375 m


PARALLEL_MIN_CELLS = 2_000_000  # grid cells x files below which one process is faster


@dataclass(frozen=True)
class _Field:
    """How one base field is synthesised: value = deep + (top - deep + horizontal) * w(z) + noise.

    `lat` weights a large-scale latitude pattern (+1 high in the tropics), `rand` a smooth random
    pattern; `season` is the seasonal amplitude (opposite in the two hemispheres); `plume` the
    change per mmol/m^3 of added alkalinity inside the plume (0: no plume).
    """

    long_name: str
    units: str
    top: float
    deep: float
    lat: float
    rand: float
    season: float
    noise: float
    plume: float = 0.0
    zscale_m: float = 500.0


_FIELDS: dict[str, _Field] = {
    "CO3": _Field("Carbonate Ion Concentration", "mmol/m^3", 200, 85, 50, 8, 6, 0.4, 0.8),
    "pH_3D": _Field("pH", "1", 8.08, 7.88, -0.03, 0.02, 0.01, 0.002, 0.002),
    "co3_sat_calc": _Field(
        "CO3 concentration at calcite saturation", "mmol/m^3", 42, 95, 2, 1, 0.5, 0.1, 0, 2500
    ),
    "co3_sat_arag": _Field(
        "CO3 concentration at aragonite saturation", "mmol/m^3", 65, 145, 3, 1.5, 0.7, 0.1, 0, 2500
    ),
    "DIC": _Field("Dissolved Inorganic Carbon", "mmol/m^3", 2000, 2250, -70, 20, 8, 1.5, 0.85),
    "ALK": _Field("Alkalinity", "meq/m^3", 2300, 2390, 40, 15, 4, 1.5, 1.0),
    "CO2STAR": _Field("CO2 Star", "mmol/m^3", 12, 12, -4, 1, 1, 0.05, -0.02),
    "DCO2STAR": _Field("D CO2 Star", "mmol/m^3", 0.3, 0.3, 0.5, 0.8, 0.3, 0.02, -0.02),
    "pCO2SURF": _Field("surface pCO2", "ppmv", 385, 385, 20, 10, 12, 0.5, -0.6),
    "DpCO2": _Field("D pCO2", "ppmv", 5, 5, 20, 10, 12, 0.5, -0.6),
    "FG_CO2": _Field("DIC Surface Gas Flux", "mmol/m^3 cm/s", 0, 0, -3e-3, 1e-3, 1e-3, 5e-5, 4e-5),
    "PH": _Field("Surface pH", "1", 8.08, 8.08, -0.03, 0.02, 0.01, 0.002, 0.002),
    "ATM_CO2": _Field("Atmospheric CO2", "ppmv", 380, 380, -1.5, 0.5, 3, 0.05),
    "ALK_FLUX": _Field("Alkalinity Flux", "meq/m^3 cm/s", 0, 0, 0, 0, 0, 0),
    "DIC_zint_100m": _Field(
        "Dissolved Inorganic Carbon 0-100m Vertical Integral",
        "mmol/m^3 cm",
        2.0e7,
        2.0e7,
        -7e5,
        2e5,
        8e4,
        1.5e4,
        8.5e3,
    ),
    "ALK_zint_100m": _Field(
        "Alkalinity 0-100m Vertical Integral",
        "meq/m^3 cm",
        2.3e7,
        2.3e7,
        4e5,
        1.5e5,
        4e4,
        1.5e4,
        1e4,
    ),
    "STF_ALK": _Field(
        "Alkalinity Surface Flux", "meq/m^3 cm/s", 0, 0, 2e-4, 1e-4, 5e-5, 5e-6, 2e-5
    ),
    "tend_zint_100m_DIC": _Field(
        "DIC Tendency Vertical Integral, 0-100m",
        "mmol/m^3 cm/s",
        0,
        0,
        1e-2,
        5e-3,
        5e-3,
        2e-4,
        2e-4,
    ),
    "tend_zint_100m_ALK": _Field(
        "ALK Tendency Vertical Integral, 0-100m",
        "meq/m^3 cm/s",
        0,
        0,
        5e-3,
        3e-3,
        2e-3,
        1e-4,
        -1e-4,
    ),
}


def sample_path(polygon: int, injection_month: str, index: int) -> str:
    """The relative path of month `index` (0-based) of one polygon's injection-month series."""
    year, month = _calendar_month(injection_month, index)
    return (
        f"{polygon:03d}/{injection_month}/alk-forcing.{polygon:03d}-1999-{injection_month}"
        f".pop.h.{year:04d}-{month:02d}.nc"
    )


def elapsed_days(index: int) -> int:
    """Elapsed time of month `index`: the same for every injection month (a cube dimension)."""
    return round(index * 365 / 12 + 15)


def _calendar_month(injection_month: str, index: int) -> tuple[int, int]:
    m0 = int(injection_month) - 1 + index
    return START_YEAR + m0 // 12, m0 % 12 + 1
